"""Bad input as a new user types it: one line `error: …` naming what is wrong and what is allowed, exit status 2,
no traceback; config errors are found before torch is imported."""

import subprocess
import sys

import pytest
import yaml

from xdlib.__main__ import main


def _params(tmp_path, values, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _written(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _local(tmp_path, data: bytes, suffix=".jsonl", kind="single", **spec):
    """A params file whose target is a local task over one file holding `data`; args of its dry run."""
    path = _written(tmp_path, f"data{suffix}", data)
    task = {"kind": kind, "train": path, **spec}
    return ["sweep", _params(tmp_path, {"local_tasks": {"mine": task}, "target_task": "mine"}), "--dry-run"]


SQUAD = b'{"data": [{"title": "t", "paragraphs": [{"context": "Paris is big", "qas": [{"id": "1", "question": "q", "answers": [{"text": "Paris", "answer_start": 3}]}]}]}]}'
# local data files, checked by `sweep --dry-run` (every file of every cell, before anything runs)
DATA_CASES = {
    "labels 1 and '1'": (
        b'{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n',
        {},
        "labels '1' and 1",
        "one spelling",
    ),
    "csv without the label column": (b"text,lab\na,1\n", {"suffix": ".csv"}, "missing column(s) ['label']", "found"),
    "csv row with a field too many": (
        b"text,label\na,1,2\n",
        {"suffix": ".csv"},
        "data.csv:2",
        "expected 2 csv fields",
    ),
    "empty csv": (b"", {"suffix": ".csv"}, "data.csv: empty file", "header row"),
    "latin-1 jsonl": ('{"text": "caf\xe9", "label": 1}\n'.encode("latin-1"), {}, "not UTF-8", "UTF-8 csv"),
    "binary file": (bytes(range(256)), {"suffix": ".tsv"}, "data.tsv", "UTF-8"),
    "empty jsonl": (b"\n\n", {}, "no examples", "at least one example"),
    "broken jsonl line": (
        b'{"text": "a", "label": 1}\n{"text": "b", "label\n',
        {},
        "data.jsonl:2",
        "one JSON object per line",
    ),
    "jsonl line that is a list": (b'["a", 1]\n', {}, "data.jsonl:1", "expected a JSON object"),
    "regression label not a number": (
        b'{"text": "a", "label": "high"}\n',
        {"kind": "regression"},
        "'high'",
        "not a number",
    ),
    "label outside the declared set": (
        b'{"text": "a", "label": "meh"}\n',
        {"labels": ["good", "bad"]},
        "'meh'",
        "['good', 'bad']",
    ),
    "pair without its second text": (b'{"text": "a", "label": "x"}\n', {"kind": "pair"}, "['text_pair']", "found"),
    "conll line without a tag": (
        b"Paris B-LOC\nis\n",
        {"suffix": ".conll", "kind": "token"},
        "data.conll:2",
        "columns",
    ),
    "parquet that is not Parquet": (b"PAR1 nope", {"suffix": ".parquet"}, "data.parquet", "not a readable Parquet"),
    "SQuAD answer not at answer_start": (SQUAD, {"suffix": ".json", "kind": "qa"}, "'Paris'", "answer_start=3"),
    "SQuAD file that is not JSON": (b"{data: 1}", {"suffix": ".json", "kind": "qa"}, "data.json:1", "not valid JSON"),
    "SQuAD JSON without data": (
        b'{"version": 2}',
        {"suffix": ".json", "kind": "qa"},
        "data.json",
        "expected SQuAD JSON",
    ),
    "unknown file format": (b"a", {"suffix": ".xlsx"}, "format None unknown", "conll"),
    "unknown kind": (b"a", {"kind": "ranking"}, "needs kind", "'single', 'pair'"),
    "unknown local task key": (b"a", {"lables": ["x"]}, "['lables']", "known:"),
}
for _name, (_data, _spec, _names, _allowed) in DATA_CASES.items():
    DATA_CASES[_name] = (lambda t, d=_data, sp=_spec: _local(t, d, **sp), _names, _allowed)


CASES = {
    "unknown choice": (lambda t: ["run", "distill", "-p", "logit_loss=cosine"], "logit_loss='cosine'", "mse, kl"),
    "unknown key": (lambda t: ["run", "teacher", "-p", "teacher_lrr=1e-4"], "'teacher_lrr'", "known: "),
    "misspelt device": (lambda t: ["run", "teacher", "-p", "device=gpu"], "device='gpu'", "cuda:N"),
    "zero layers": (lambda t: ["run", "distill", "-p", "student_arch=l0-h384"], "l0-h384", "at least 1"),
    "NaN learning rate": (lambda t: ["run", "teacher", "-p", "teacher_lr=.nan"], "teacher_lr=nan", "finite"),
    "negative epochs": (lambda t: ["run", "teacher", "-p", "teacher_epochs=-1"], "teacher_epochs=-1", ">= 0"),
    "no equals sign": (lambda t: ["run", "teacher", "-p", "seed"], "'seed'", "key=value"),
    "unknown pooling": (lambda t: ["run", "teacher", "-p", "pooling=max"], "pooling='max'", "auto, cls, mean"),
    "unknown loss term in a stage spec": (
        lambda t: ["run", "distill", "--params", _params(t, {"recipe": {"logits": {"loss": {"logit": 1.0}}}})],
        "recipe.logits.loss: unknown loss term 'logit'",
        "hidden, attention, logits, labels",
    ),
    "unknown stage in the recipe": (
        lambda t: ["run", "distill", "--params", _params(t, {"recipe": {"hiden": {"lr": 1e-4}}})],
        "'hiden'",
        "general, hidden, logits, labels, joint",
    ),
    "unknown stage": (lambda t: ["run", "student"], "'student'", "teacher, distill, stilts, finetune"),
    "unknown task": (lambda t: ["run", "finetune", "-p", "target_task=sst3", "-p", f"runs_dir={t}"], "'sst3'", "sst2"),
    "misspelt student keyword": (
        lambda t: ["run", "finetune", "-p", "student=distiled", "-p", f"runs_dir={t}"],
        "did you mean 'distilled'",
        "undistilled, stilts, teacher",
    ),
    "missing params file": (lambda t: ["run", "teacher", "--params", str(t / "nope.yaml")], "nope.yaml", "exist"),
    "latin-1 params file": (
        lambda t: ["run", "teacher", "--params", _written(t, "l.yaml", "name: caf\xe9\n".encode("latin-1"))],
        "not UTF-8",
        "UTF-8 YAML",
    ),
    "binary params file": (
        lambda t: ["run", "teacher", "--params", _written(t, "b.yaml", bytes(range(256)))],
        "b.yaml",
        "UTF-8",
    ),
    "broken YAML": (lambda t: ["sweep", _written(t, "y.yaml", b"grid: [a, b\n"), "--dry-run"], "line", "YAML"),
    "a list, not a mapping": (
        lambda t: ["sweep", _written(t, "m.yaml", b"- a\n- b\n"), "--dry-run"],
        "list",
        "mapping",
    ),
    "empty grid values": (
        lambda t: ["sweep", _params(t, {"grid": {"seed": []}}), "--dry-run"],
        "grid key 'seed'",
        "non-empty list",
    ),
    "target settings for no task": (
        lambda t: ["sweep", _params(t, {"target_settings": {"trec7": {"finetune_lr": 1e-4}}}), "--dry-run"],
        "'trec7'",
        "trec6",
    ),
    "unknown executor": (lambda t: ["sweep", _params(t, {}), "--executor", "ray"], "'ray'", "inline, direct"),
    "processes per cell without local": (
        lambda t: ["sweep", _params(t, {}), "--gpus-per-cell", "2"],
        "--gpus-per-cell 2",
        "--executor local",
    ),
    "report without runs": (lambda t: ["report", "--runs", str(t / "none")], "no complete run", "make study"),
    "scale rows": (lambda t: ["bench", "--scale", "--scale-rows", "ten"], "'ten'", "10000"),
    "device not on this machine": (
        lambda t: ["run", "teacher", "-p", "device=cuda:7", "-p", f"runs_dir={t}", "-p", "source_task=toy-sentiment"],
        "cuda:7",
        "allowed: auto, cpu",
    ),
    "missing dev file": (
        lambda t: _local(t, b'{"text": "a", "label": 1}\n', dev=str(t / "dev.jsonl")),
        "dev.jsonl",
        "no such file",
    ),
    "missing train file": (
        lambda t: [
            "sweep",
            _params(t, {"local_tasks": {"m": {"kind": "single", "train": "x.csv"}}, "target_task": "m"}),
            "--dry-run",
        ],
        "x.csv",
        "no such file",
    ),  # fmt: skip
    "local_tasks not a mapping": (
        lambda t: ["sweep", _params(t, {"local_tasks": ["a"]}), "--dry-run"],
        "local_tasks",
        "a mapping of task name",
    ),  # fmt: skip
    "hidden size the init model lacks": (
        lambda t: ["run", "distill", "-p", "student_arch=l6-h385", "-p", f"runs_dir={t}"],
        "l6-h385",
        "l<N>-h384",
    ),
    "init layers out of range": (
        lambda t: ["run", "distill", "-p", "student_layers=[0, 1, 9]", "-p", f"runs_dir={t}"],
        "[0, 1, 9]",
        "0..5",
    ),
    "heads that do not divide": (
        lambda t: ["run", "distill", "-p", "student_arch=l6-h384", "-p", "student_heads=5", "-p", f"runs_dir={t}"],
        "student_heads=5",
        "divisor",
    ),
    "layer map out of range": (
        lambda t: ["run", "distill", "-p", "layer_map=[0, 2, 4, 99]", "-p", f"runs_dir={t}"],
        "99",
        "teacher",
    ),
    "layer map of words": (lambda t: ["run", "distill", "-p", "layer_map=middle"], "layer_map", "'top', 'uniform'"),
    "unknown augmentation": (
        lambda t: ["run", "distill", "-p", "augmentation=[wikipedia]", "-p", f"runs_dir={t}"],
        "'wikipedia'",
        "allowed",
    ),
    "unknown offline model": (
        lambda t: ["run", "teacher", "-p", "teacher_model=offline:bert-huge", "-p", f"runs_dir={t}"],
        "offline:bert-huge",
        "offline:all-MiniLM-L6-v2",
    ),
    "model folder without config.json": (
        lambda t: ["run", "teacher", "-p", f"teacher_model={t}", "-p", f"runs_dir={t / 'r'}"],
        "config.json",
        "folder",
    ),
    "zero max_length": (lambda t: ["run", "teacher", "-p", "max_length=0"], "max_length=0", "in [8, 4096]"),
    "seed that is a word": (lambda t: ["run", "teacher", "-p", "seed=abc"], "seed", "int"),
    "negative learning rate": (lambda t: ["run", "distill", "-p", "distill_lr=-1"], "distill_lr=-1", "in [0.0, 1.0]"),
    "infinite epochs": (lambda t: ["run", "teacher", "-p", "teacher_epochs=.inf"], "teacher_epochs", "finite"),
    "kl on a regression source": (
        lambda t: ["run", "distill", "-p", "source_task=toy-regression", "-p", "logit_loss=kl", "-p", f"runs_dir={t}"],
        "logit_loss='kl'",
        "logit_loss=mse",
    ),
    "QA as a distillation source": (
        lambda t: ["run", "distill", "-p", "source_task=toy-qa", "-p", f"runs_dir={t}"],
        "'toy-qa'",
        "single, pair",
    ),
    "unknown device": (lambda t: ["run", "teacher", "-p", "device=tpu"], "device='tpu'", "cuda:N"),
    "runs_dir under a file": (
        lambda t: ["run", "teacher", "-p", f"runs_dir={_written(t, 'f', b'')}/runs"],
        "runs_dir",
        "is a file",
    ),
    "unknown stage for params": (lambda t: ["params", "trainer"], "'trainer'", "teacher, distill, stilts, finetune"),
    "tasks with a missing params file": (lambda t: ["tasks", "--params", str(t / "no.yaml")], "no.yaml", "exist"),
    "unknown key in a params file": (
        lambda t: ["sweep", _params(t, {"finetune_lrr": 1e-4}), "--dry-run"],
        "'finetune_lrr'",
        "known: ",
    ),
    "unknown key in the grid": (
        lambda t: ["sweep", _params(t, {"grid": {"sed": [0, 1]}}), "--dry-run"],
        "'sed'",
        "known: ",
    ),
    "grid that is a number": (lambda t: ["sweep", _params(t, {"grid": 3}), "--dry-run"], "grid", "a list of values"),
    "unknown task in the grid": (
        lambda t: ["sweep", _params(t, {"grid": {"target_task": ["sst2", "sst5"]}}), "--dry-run"],
        "'sst5'",
        "sst2",
    ),
    "target_settings not a mapping": (
        lambda t: ["sweep", _params(t, {"target_settings": ["trec6"]}), "--dry-run"],
        "target_settings",
        "mapping",
    ),
    "zero workers": (
        lambda t: ["sweep", _params(t, {}), "--executor", "local", "--workers", "0"],
        "--workers: '0'",
        "a whole number >= 1",
    ),  # fmt: skip
    "workers that is a word": (lambda t: ["sweep", _params(t, {}), "--workers", "two"], "'two'", ">= 1"),
    "unknown command": (lambda t: ["trian"], "'trian'", "run"),
    "run without a stage": (lambda t: ["run"], "stage", "--help"),
    "unknown bench size": (lambda t: ["bench", "--size", "huge"], "'huge'", "smoke"),
    "unknown option": (lambda t: ["report", "--rnus", "x"], "--rnus", "--help"),
    **DATA_CASES,
}


def _main(args) -> int:
    try:
        return main(args)
    except SystemExit as stop:  # argparse's usage errors
        return stop.code


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case, tmp_path, capsys):
    args, names, allowed = CASES[case]
    assert _main(args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and names in err and allowed in err, err


def test_config_errors_come_before_torch_is_imported():
    code = (
        "import sys; from xdlib.__main__ import main; "
        "rc = main(['run', 'distill', '-p', 'logit_loss=cosine']); print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr)


def test_a_failure_at_run_time_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    import xdlib.stages

    def broken(stage, cfg, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(xdlib.stages, "ensure", broken)
    assert main(["run", "teacher", "-p", f"runs_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err == "error: RuntimeError: disk on fire second line (--debug or XDLIB_DEBUG=1 shows where)\n"
    with pytest.raises(RuntimeError):
        main(["--debug", "run", "teacher", "-p", f"runs_dir={tmp_path}"])


NOTEBOOK_CASES = {  # notebook, parameters, the error's class, what its one line names
    "unknown choice": ("distill", {"logit_loss": "cosine"}, "ConfigError", "logit_loss='cosine'"),
    "unknown parameter": ("teacher", {"lr": 1e-3}, "ConfigError", "unknown notebook parameter(s) 'lr'"),
    "bad local file": ("finetune", "data", "DataError", "labels '1' and 1"),
}


@pytest.mark.notebooks
@pytest.mark.parametrize("case", sorted(NOTEBOOK_CASES))
def test_a_notebook_under_papermill_raises_one_line(case, tmp_path):
    """papermill raises the notebook's one exception; the notebook shows one line `error: …`, no traceback."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from xdlib.notebook import NOTEBOOKS

    name, parameters, ename, names = NOTEBOOK_CASES[case]
    if parameters == "data":
        data = _written(tmp_path, "data.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n')
        parameters = {"local_tasks": {"mine": {"kind": "single", "train": data}}, "target_task": "mine",
                      "runs_dir": str(tmp_path / "runs")}  # fmt: skip
    out = tmp_path / "out.ipynb"
    with pytest.raises(PapermillExecutionError) as raised:
        papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                                   progress_bar=False, kernel_name="python3")  # fmt: skip
    assert raised.value.ename == ename and names in raised.value.evalue and "\n" not in raised.value.evalue
    (error,) = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []) if o.get("ename")]
    assert error["traceback"] == [f"error: {raised.value.evalue}"]


BAD_VALUES = ("-1", "0", "abc", "", "1.5")


def _valued_options():
    """Every option that takes a value, of every subcommand of `xdlib` and of `python -m xdlib.deploy`: (the argv
    before it, its flag, the action)."""
    import argparse

    from xdlib.__main__ import build_parser
    from xdlib.deploy.deploy import build_parser as deploy_parser

    found = []
    for prog, parser in (("xdlib", build_parser()), ("deploy", deploy_parser())):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        commands = subs[0].choices.items() if subs else [(None, parser)]
        for name, sub in commands:
            for action in sub._actions:
                if action.option_strings and action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                    found.append(((prog, name), action.option_strings[-1], action))
    return found


def test_every_valued_option_with_a_numeric_or_fixed_set_value_is_checked_by_the_one_table():
    """An option whose value is a number, a list of sizes, a device or one of a fixed set goes through
    `options.CHECKS` (free text, a path or a -p pair is checked where it is read)."""
    from xdlib.options import CHECKS

    free = {"--params", "--out", "--runs", "-p"}  # paths and key=value pairs: checked by config.py and the commands
    for where, flag, action in _valued_options():
        if flag in free:
            continue
        assert flag in CHECKS and action.type is CHECKS[flag], (where, flag)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_every_checked_option_refuses_a_bad_value_in_one_line(value, tmp_path):
    """Every checked option of every subcommand, given a bad value: exit status 2, one line `error: …` that names
    the option, the value and what is allowed, no traceback, nothing run (argparse, before any import)."""
    from xdlib.options import CHECKS

    cases = 0
    for (prog, command), flag, _ in _valued_options():
        if flag not in CHECKS:
            continue
        try:
            CHECKS[flag](value)
            continue  # a value this option allows (a count of 1, say): not a bad value for it
        except Exception:
            pass
        module = "xdlib" if prog == "xdlib" else "xdlib.deploy"
        argv = [sys.executable, "-m", module] + ([command] if command else [])
        argv += {"sweep": ["params/smoke.yaml"], "study": ["params/smoke.yaml"], None: [str(tmp_path)]}.get(command, [])
        argv += [f"{flag}={value}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (argv, done.stderr)
        assert lines[0].startswith("error: ") and flag in lines[0] and "allowed:" in lines[0], lines[0]
        assert "Traceback" not in done.stderr and not done.stdout.strip(), done.stdout
        cases += 1
    assert cases >= 6  # the table's options on every command that has them


def test_a_run_that_cannot_start_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """A Hub-only task with the Hub unreachable: one line, exit status 2, and no run folder, stage folder or lock
    file left in the store (a later run is not misled into 'a killed run resumes')."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = tmp_path / "runs"
    args = ["run", "teacher", "--params", "params/smoke.yaml", "-p", "source_task=rte", "-p", f"runs_dir={runs}"]
    assert _main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Hub" in err, err
    assert not [p for p in runs.rglob("*") if p.is_file()] and not (runs / "teacher").exists(), list(runs.rglob("*"))


def test_four_starts_of_a_run_that_cannot_start_leave_nothing_behind(tmp_path, monkeypatch, capsys):
    """Four starts of the same run at once (threads here: flock locks belong to an open file, so threads exclude
    each other as processes do), which cannot start: each fails in its one line, and whichever discards last, no
    folder or lock file is left (a waiter re-opens a lock file that the holder unlinked)."""
    import concurrent.futures

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = tmp_path / "runs"
    args = ["run", "teacher", "--params", "params/smoke.yaml", "-p", "source_task=rte", "-p", f"runs_dir={runs}"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: _main(args), range(4)))
    assert statuses == [2] * 4
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 4 and all("nyu-mll/glue/rte needs the Hugging Face Hub" in line for line in lines), lines
    assert not [p for p in runs.rglob("*") if p.is_file()] and not (runs / "teacher").exists(), list(runs.rglob("*"))


def test_a_killed_teacher_cache_build_leaves_no_temporary_folder_after_the_next_start(tmp_path, monkeypatch):
    """A build killed before its rename leaves `.<key>.<random>/`; the next call for that cache removes it under the
    cache's lock, whether it builds the cache or finds it complete."""
    from xdlib import teacher_cache

    path = tmp_path / "teacher-outputs" / "key"
    path.mkdir(parents=True)
    (tmp_path / "teacher-outputs" / ".key.x1y2").mkdir()
    (tmp_path / "teacher-outputs" / ".key.x1y2" / "hidden.npy").write_bytes(b"half")
    (tmp_path / "teacher-outputs" / ".other.z9").mkdir()  # another cache's: not this call's to remove
    monkeypatch.setattr(teacher_cache, "_cache_is_current", lambda p, source: True)
    monkeypatch.setattr(teacher_cache.TeacherCache, "open", classmethod(lambda cls, p: "opened"))
    assert teacher_cache.build_teacher_cache(None, None, [], None, 64, path, "cpu") == "opened"
    assert sorted(p.name for p in (tmp_path / "teacher-outputs").iterdir()) == [".other.z9", "key"]
