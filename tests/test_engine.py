"""The engine trains on all of its data, and the same weights on any number of processes.

- A stage's gradual-unfreezing phases each get their own budget (at least the floor), and each continues in the
  stage's data where the phase before it planned to end: every transfer row once per epoch of that stream (phases
  once replayed the stage's first slice); a resume inside the third phase continues at the same position.
- The tokenised-set cache tells apart two tasks with the same words and other labels.
- Two processes train a token task, and a joint-mode distillation with unlabelled rows, as one process does.
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import assert_same_weights
from safetensors.torch import load_file

from xdlib import kd, runs
from xdlib.config import Config
from xdlib.data import encode, encode_set, length_grouped_batches
from xdlib.stages import ensure
from xdlib.tasks import get_task
from xdlib.train import Interrupted, schedule

SMALL = {"max_train_samples": 96, "max_eval_samples": 48}  # row coverage needs no more data


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory, tiny_encoder) -> Path:
    """One trained teacher, copied into each test's run store: the tests distil, they need not train it again."""
    from conftest import smoke_params

    tmp = tmp_path_factory.mktemp("engine")
    ensure("teacher", Config.from_dict(smoke_params(tmp, tiny_encoder) | SMALL))
    return tmp / "runs"


def _params(base_params: dict, teacher_store: Path, runs_dir: Path, **changes) -> dict:
    shutil.copytree(teacher_store / "teacher", runs_dir / "teacher")
    return base_params | SMALL | {"runs_dir": str(runs_dir)} | changes


def _record_batches(monkeypatch) -> dict[str, dict]:
    """Wrap kd.train: per phase, the number of rows it trains on and every batch it takes, in order."""
    seen: dict[str, dict] = defaultdict(lambda: {"batches": []})
    real = kd.train

    def recording(module, trainable, lengths, make_batch, settings, ckpt_dir, **kwargs):
        phase = seen[Path(ckpt_dir).name]
        phase["rows"], phase["settings"], phase["lengths"] = len(lengths), settings, list(lengths)

        def make(idx):
            phase["batches"].append(list(idx))
            return make_batch(idx)

        return real(module, trainable, lengths, make, settings, ckpt_dir, **kwargs)

    monkeypatch.setattr(kd, "train", recording)
    return seen


def _stage_names(seen: dict, stage: str) -> list[str]:
    names = sorted(name for name in seen if name.split("-")[1] == stage)
    assert len(names) > 1, names  # gradual unfreezing: several phases
    return names


def test_each_phase_gets_its_budget_and_continues_in_its_stages_data(tmp_path, base_params, teacher_store, monkeypatch):
    seen = _record_batches(monkeypatch)
    params = _params(base_params, teacher_store, tmp_path / "runs", distill_epochs=2.0, phase_min_updates=20)
    cfg = Config.from_dict(params)
    ensure("distill", cfg)
    for stage in ("logits", "labels"):
        for name in _stage_names(seen, stage):
            plan = schedule(seen[name]["rows"], seen[name]["settings"])
            assert plan.budget == max(20, 2 * plan.updates_per_epoch), (name, plan)
            # patience 20 (smoke params): no phase stops early, so each takes its whole budget, in its place
            assert seen[name]["batches"] == _stage_plan(seen, name), name
        stream = [b for name in _stage_names(seen, stage) for b in seen[name]["batches"]]
        n_rows, per_epoch = seen[name]["rows"], -(-seen[name]["rows"] // cfg.distill_batch_size)
        for epoch in range(len(stream) // per_epoch):  # every row exactly once in each epoch of the stream
            rows = Counter(i for batch in stream[epoch * per_epoch : (epoch + 1) * per_epoch] for i in batch)
            assert sorted(rows) == list(range(n_rows)) and set(rows.values()) == {1}, (stage, epoch)
    # the hidden stage is one phase over the same transfer rows: 96 rows are 6 updates an epoch, so its 2 epochs
    # (12 updates) are below the floor, and it takes 20: three whole epochs, then two batches of the fourth
    (hidden,) = [seen[name] for name in seen if name.endswith("-hidden")]
    assert schedule(hidden["rows"], hidden["settings"]).budget == 20 == len(hidden["batches"])
    assert Counter(i for b in hidden["batches"][:18] for i in b) == Counter({i: 3 for i in range(hidden["rows"])})


def _stage_plan(seen: dict, name: str) -> list[list[int]]:
    """The batches phase `name` must draw: its budget's worth of the stage's data stream (the epochs of
    `length_grouped_batches`, in order), from where the phases before it planned to end."""
    stage = name.split("-")[1]
    k = _stage_names(seen, stage).index(name)
    settings, lengths = seen[name]["settings"], seen[name]["lengths"]
    plan = schedule(len(lengths), settings)
    epochs = (k + 1) * plan.budget // plan.updates_per_epoch + 1
    stream = [b for e in range(epochs) for b in length_grouped_batches(lengths, settings.batch_size, settings.seed, e)]
    return stream[k * plan.budget : (k + 1) * plan.budget]


def test_a_resume_inside_the_third_phase_continues_at_its_place(tmp_path, base_params, teacher_store, monkeypatch):
    seen = _record_batches(monkeypatch)
    params = _params(
        base_params, teacher_store, tmp_path / "runs", checkpoint_every=2, distill_epochs=2.0, phase_min_updates=20
    )  # 20 updates a phase: under patience 20, none stops early
    cfg = Config.from_dict(params)
    recording = kd.train

    def kill_in_third_logits_phase(module, trainable, lengths, make_batch, settings, ckpt_dir, **kwargs):
        if Path(ckpt_dir).name.endswith("logits-u3"):

            def on_update(update):
                if update == 3:  # one update after the checkpoint at update 2
                    raise Interrupted("simulated kill")

            kwargs["on_update"] = on_update
        return recording(module, trainable, lengths, make_batch, settings, ckpt_dir, **kwargs)

    monkeypatch.setattr(kd, "train", kill_in_third_logits_phase)
    with pytest.raises(Interrupted):
        ensure("distill", cfg)
    name = next(n for n in seen if n.endswith("logits-u3"))
    killed, seen[name]["batches"] = seen[name]["batches"], []
    monkeypatch.setattr(kd, "train", recording)
    resumed = ensure("distill", cfg)
    plan = _stage_plan(seen, name)  # every phase of the stage is known now
    assert killed == plan[:3]  # updates 1-3 of the phase, at its place in the stage
    assert seen[name]["batches"] == plan[2:], "the resume continues at the checkpoint's update, in the stage's data"
    straight = ensure("distill", Config.from_dict(_params(params, teacher_store, tmp_path / "straight")))
    a, b = (load_file(p / "model" / "model.safetensors") for p in (resumed, straight))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert runs.is_complete(resumed)


def test_the_tokenised_cache_keeps_each_tasks_labels(tmp_path, tiny_encoder):
    """One CoNLL file declared as an NER task and as a POS task (another tag column), and the NER task again with
    its tag names in another order: three sets, each with its own labels, from one cache folder."""
    from transformers import AutoTokenizer

    sentences = [
        [("good", "ADJ", "B-POS"), ("movie", "NOUN", "O")],
        [("bad", "ADJ", "B-NEG"), ("plot", "NOUN", "O"), ("the", "DET", "O")],
    ] * 6
    conll = tmp_path / "tags.conll"
    conll.write_text("\n\n".join("\n".join(" ".join(t) for t in s) for s in sentences) + "\n")
    local = {
        "ner": {"kind": "token", "train": str(conll), "dev": str(conll), "tag_column": 2},
        "pos": {"kind": "token", "train": str(conll), "dev": str(conll), "tag_column": 1},
        "ner-reordered": {
            "kind": "token",
            "train": str(conll),
            "dev": str(conll),
            "tag_column": 2,
            "labels": ["O", "B-POS", "B-NEG"],
        },  # fmt: skip
    }
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    cache = tmp_path / "tokenised"
    labels = {}
    for name in local:
        task = get_task(name, local)
        rows = task.load()["train"]
        got = encode_set(tokenizer, rows, task, 16, cache)
        want = encode(tokenizer, rows, task, 16)
        labels[name] = [e["label"] for e in got.take(range(len(got)))]
        assert labels[name] == [e["label"] for e in want], name
    assert labels["ner"] != labels["pos"] and labels["ner"] != labels["ner-reordered"]
    assert len(list(cache.glob("*.arrow"))) == 3


def _processes(case: str, tiny_encoder: Path, tmp_path: Path) -> tuple[dict, dict]:
    import ddp_worker

    one, two = tmp_path / f"{case}-1.safetensors", tmp_path / f"{case}-2.safetensors"
    ddp_worker.run(0, 1, case, str(tiny_encoder), str(one), "")
    init = tmp_path / f"{case}-init"
    mp.start_processes(ddp_worker.run, args=(2, case, str(tiny_encoder), str(two), str(init)), nprocs=2,
                       start_method="spawn")  # fmt: skip
    return load_file(one), load_file(two)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["token", "joint"])
def test_two_processes_train_a_token_task_and_joint_mode_as_one(case, tiny_encoder, tmp_path):
    """Ranks hold different numbers of words (token loss: a mean over words) and of labelled rows (joint mode's
    label loss: a mean over labelled rows only); the losses' counts are summed over the ranks."""
    one, two = _processes(case, tiny_encoder, tmp_path)
    assert_same_weights(one, two)


class _Recorder(torch.nn.Module):
    """A one-weight module that records the rows of every batch it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.rows: list[int] = []

    def forward(self, batch):
        self.rows += batch["rows"]
        return (self.w - 1.0) ** 2


@pytest.mark.parametrize("accum, parts", [(1, 1), (2, 1), (2, 3), (3, 4)])
def test_runs_that_start_where_the_last_planned_to_end_walk_the_data_as_one(tmp_path, accum, parts):
    """9 rows in batches of 2 (5 batches): with gradient accumulation an epoch's last update takes what is left,
    and runs of one epoch each, each starting where the one before planned to end, walk the epochs as one run."""
    from xdlib.train import LoopSettings, train

    settings = LoopSettings(epochs=1.0, lr=0.1, batch_size=2, grad_accum_steps=accum, progress=False)
    module = _Recorder()
    budget = schedule(9, settings).budget
    for k in range(parts):
        train(module, [module.w], [5] * 9, lambda idx: {"rows": list(idx)}, settings, tmp_path / f"p{k}",
              start_update=k * budget)  # fmt: skip
    assert len(module.rows) == 9 * parts
    for epoch in range(parts):
        assert sorted(module.rows[epoch * 9 : (epoch + 1) * 9]) == list(range(9)), (accum, parts, epoch)


def test_the_schedule_gives_every_run_its_floor_and_enough_evaluations():
    """The schedule is computed before the loop: at least min_updates (never a few Adam steps), at least
    patience + 1 evaluations so that early stopping can act, warmup over the whole budget."""
    from dataclasses import replace

    from xdlib.train import LoopSettings

    base = LoopSettings(epochs=1.0, lr=1e-4, batch_size=32, evals_per_epoch=1, patience=5, warmup_ratio=0.1)
    plan = schedule(100, base)  # 4 batches an epoch: 4 updates, each one evaluated
    assert (plan.updates_per_epoch, plan.budget, plan.eval_every, plan.warmup) == (4, 4, 1, 0)
    floored = schedule(100, replace(base, min_updates=30))
    assert (floored.budget, floored.eval_every, floored.warmup) == (30, 4, 3)  # 7 evaluations, >= patience + 1
    long = schedule(3200, replace(base, epochs=3.0, grad_accum_steps=2))
    assert (long.updates_per_epoch, long.budget, long.eval_every) == (50, 150, 25)  # 6 evaluations, not 3
    assert schedule(3200, replace(base, epochs=0.0, min_updates=30)).budget == 0  # a stage switched off
