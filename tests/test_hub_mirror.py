"""Hub datasets from a local mirror laid out as the Hub repos (air-gapped clusters): the GLUE, SQuAD v2 and WikiAnn
loaders read Hub-shaped Parquet with the Hub's feature types; MNLI -> distil -> GLUE / SQuAD v2 / WikiAnn runs end
to end at toy size; every paper params file dry-runs against the mirror; a missing split is one clear line."""

import shutil
from pathlib import Path

import pytest
import yaml
from hub_mirror import build_mirror, mirror_words

from xdlib.__main__ import main
from xdlib.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = build_mirror(tmp_path_factory.mktemp("hub"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDLIB_HUB_MIRROR", str(root))
        yield root


def test_loaders_read_hub_shaped_parquet(mirror):
    mnli = get_task("mnli").load()
    assert set(mnli) == {"train", "dev", "test", "test_mismatched"}  # GLUE's dev is our test; 5% of train our dev
    assert len(mnli["train"]) + len(mnli["dev"]) == 48 and mnli["test"][0]["text_pair"]
    assert {r["label"] for r in mnli["train"]} <= {0, 1, 2}
    assert all(isinstance(r["label"], float) for r in get_task("stsb").load()["train"])
    squad = get_task("squad_v2").load()
    assert any(not r["answers"] for r in squad["test"]) and any(r["answers"] for r in squad["test"])
    answer = next(r for r in squad["train"] if r["answers"])["answers"][0]
    assert set(answer) == {"text", "start"}
    ner = get_task("wikiann:de").load()["train"][0]
    assert ner["words"][:2] and ner["label"][0] == 1  # B-PER, read from Sequence(ClassLabel)


def test_a_mirror_without_a_split_is_one_line(mirror, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(mirror / "nyu-mll", broken / "nyu-mll")
    for path in (broken / "nyu-mll/glue/mnli").glob("validation_matched-*"):
        path.unlink()
    monkeypatch.setenv("XDLIB_HUB_MIRROR", str(broken))
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"source_task": "mnli", "target_task": "sst2"}))
    assert main(["sweep", str(params), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "nyu-mll/glue/mnli has no validation_matched split" in err and "found splits: " in err


@pytest.mark.parametrize("path", sorted((ROOT / "params" / "paper").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_params_dry_run_against_the_mirror(mirror, path):
    from xdlib.sweep import sweep

    status = sweep(path, dry_run=True)
    assert len(status) > 1 and set(status["state"]) == {"planned"}


def test_mnli_distilled_then_glue_squad_wikiann_at_toy_size(mirror, tmp_path):
    from conftest import make_tiny_encoder, smoke_params

    from xdlib.report import build_report
    from xdlib.sweep import sweep

    encoder = make_tiny_encoder(tmp_path / "encoder", words=mirror_words(mirror))
    values = smoke_params(tmp_path, encoder) | {
        "name": "mirror",
        "source_task": "mnli",
        "max_length": 48,
        "doc_stride": 16,
        "teacher_epochs": 4.0,
        "distill_epochs": 1.0,
        "finetune_epochs": 2.0,
        "grid": {"target_task": ["sst2", "stsb", "squad_v2", "wikiann:de"]},
    }
    params = tmp_path / "mirror.yaml"
    params.write_text(yaml.safe_dump(values))
    status = sweep(params, executor="direct")
    assert list(status["state"]) == ["done"] * 4, status[["target", "state", "error"]]
    assert status["teacher_run"].nunique() == 1 and status["distill_run"].nunique() == 1
    build_report(values["runs_dir"], tmp_path / "report")
    headline = (tmp_path / "report" / "tables" / "headline.csv").read_text()
    ours = [line for line in headline.splitlines() if line.startswith("ours")]
    assert len(ours) == 1 and "toy size" in ours[0] and "(+" not in ours[0] and "(-" not in ours[0], ours
    assert ours[0].count("n/a") == 6  # MNLI, QNLI, QQP, RTE, MRPC and the average: no run; SST-2, SQuAD2 filled
