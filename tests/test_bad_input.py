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


CASES = {
    "unknown choice": (lambda t: ["run", "distill", "-p", "logit_loss=cosine"], "logit_loss='cosine'", "mse, kl"),
    "unknown key": (lambda t: ["run", "teacher", "-p", "teacher_lrr=1e-4"], "'teacher_lrr'", "known: "),
    "misspelt device": (lambda t: ["run", "teacher", "-p", "device=gpu"], "device='gpu'", "cuda:N"),
    "zero layers": (lambda t: ["run", "distill", "-p", "student_arch=l0-h384"], "l0-h384", "at least 1"),
    "NaN learning rate": (lambda t: ["run", "teacher", "-p", "teacher_lr=.nan"], "teacher_lr=nan", "finite"),
    "negative epochs": (lambda t: ["run", "teacher", "-p", "teacher_epochs=-1"], "teacher_epochs=-1", ">= 0"),
    "no equals sign": (lambda t: ["run", "teacher", "-p", "seed"], "'seed'", "key=value"),
    "unknown stage": (lambda t: ["run", "student"], "'student'", "teacher, distill, finetune"),
    "unknown task": (lambda t: ["run", "finetune", "-p", "target_task=sst3", "-p", f"runs_dir={t}"], "'sst3'", "sst2"),
    "misspelt student keyword": (
        lambda t: ["run", "finetune", "-p", "student=distiled", "-p", f"runs_dir={t}"],
        "did you mean 'distilled'",
        "undistilled, teacher",
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
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line(case, tmp_path, capsys):
    args, names, allowed = CASES[case]
    assert main(args(tmp_path)) == 2
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
