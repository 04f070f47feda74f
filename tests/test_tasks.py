"""Task readers (offline data, local files, the allennlp format fixtures), leakage removal, a source's evaluation
rows (the same whatever the seed), QA features and augmentation resources."""

import json
import zipfile

import pytest

from xdlib import assets, tasks
from xdlib.config import Config, ConfigError, load_config
from xdlib.preflight import preflight
from xdlib.qa import encode_qa
from xdlib.tasks import DataError, get_task, normalise, row_texts
from xdlib.transfer import AugmentOptions, augmentation_rows, held_out_text, load_source, transfer_set

# split sizes after dedupe and leakage removal (pinned wheels, deterministic hash splits)
OFFLINE_SIZES = {
    "rt-polarity": (8616, 1181, 1315),
    "trec6": (4305, 532, 539),
    "sms-spam": (3573, 451, 460),
    "movie-score": (6879, 1065, 1029),
    "wnut16": (1813, 229, 235),
    "dialog-reply": (51039, 6306, 6232),
}


@pytest.mark.parametrize("name", sorted(OFFLINE_SIZES))
def test_offline_task_reads_real_data(name):
    task = get_task(name)
    data = task.load()
    assert tuple(len(data[s]) for s in ("train", "dev", "test")) == OFFLINE_SIZES[name]
    for row in data["train"][:50] + data["test"][:50]:
        if task.kind == "token":
            assert len(row["words"]) == len(row["label"]) and all(0 <= t < task.num_labels for t in row["label"])
        elif task.kind == "regression":
            assert -4.0 <= row["label"] <= 4.0 and row["text"]
        else:
            assert 0 <= row["label"] < task.num_labels and row["text"]
            assert (task.kind == "pair") == ("text_pair" in row)
    labels = {r["label"] for r in data["train"]} if task.kind in ("single", "pair") else None
    if labels is not None:
        assert labels == set(range(task.num_labels))  # every class occurs


def _texts(rows) -> set[str]:
    return {normalise(t) for r in rows for t in row_texts(r)} - {""}


def test_no_held_out_sentence_leaks_into_training_or_transfer_text_of_its_pool():
    offline = {name: get_task(name) for name in tasks.offline_task_names()}
    held = {name: _texts(t.load()["dev"] + t.load()["test"]) for name, t in offline.items()}
    for name, task in offline.items():
        train = _texts(task.load()["train"])
        for other, keys in held.items():
            if other != name and offline[other].text_pool == task.text_pool:
                assert not train & keys, f"{other} dev/test text in {name} train"
    source = {s: get_task("rt-polarity").load()[s] for s in ("train", "dev", "test")}
    resources = ["plot-sentences", "movie-dialog", "task:movie-score", "task:dialog-reply"]
    pools = frozenset({"rotten-tomatoes", "movie-dialogs"})
    rows, composition = transfer_set(source["train"], resources, AugmentOptions(seed=0), held_out_text(source, pools))
    assert composition["movie-dialog:removed_held_out"] > 0  # dialog-reply's dev/test lines were removed
    in_pools = set().union(*(held[n] for n, t in offline.items() if t.text_pool in pools))
    assert not _texts([r for r in rows if r["origin"] != "source"]) & in_pools


def test_across_pools_only_short_stock_phrases_are_shared():
    """Why leakage is checked within pools: texts shared by tasks or corpora of different sentence sources are a
    few short stock phrases ("ok", "terrible"), never a leaked example; within a pool they are thousands."""
    texts = {n: (get_task(n).text_pool, _texts(v for s in get_task(n).load().values() for v in s))
             for n in tasks.offline_task_names()}  # fmt: skip
    texts |= {
        f"corpus:{n}": (tasks.CORPUS_POOLS[n], {normalise(t) for t in f()} - {""}) for n, f in tasks.CORPORA.items()
    }
    names = sorted(texts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (pool_a, keys_a), (pool_b, keys_b) = texts[a], texts[b]
            shared = keys_a & keys_b
            if pool_a != pool_b:
                assert len(shared) <= 15 and all(len(k) <= 30 for k in shared), (a, b, sorted(shared)[:5])
    assert len(texts["rt-polarity"][1] & texts["movie-score"][1]) > 1000  # one pool: Rotten Tomatoes snippets


def test_a_run_loads_only_the_pools_its_transfer_set_draws_on(monkeypatch):
    from xdlib.config import Config
    from xdlib.tasks import base
    from xdlib.transfer import offline_pools

    cfg = Config(source_task="trec6", augmentation=["guardian-headlines", "perturb"])
    assert offline_pools(cfg) == {"trec6", "guardian-headlines"}
    assert offline_pools(Config(source_task="toy-sentiment", augmentation=["perturb"])) == frozenset()
    loaded = []
    monkeypatch.setattr(base, "load_raw", lambda task: loaded.append(task.name) or {"dev": [], "test": []})
    base.held_out_keys.cache_clear()
    try:
        held_out_text({"dev": []}, offline_pools(cfg))
        assert loaded == ["trec6"]  # not the five other offline tasks
    finally:
        base.held_out_keys.cache_clear()


def test_evaluation_rows_do_not_depend_on_the_seed():
    data = [load_source(Config(seed=s, max_eval_samples=20), "toy-sentiment", 50) for s in (0, 1)]
    assert data[0]["dev"] == data[1]["dev"] and data[0]["test"] == data[1]["test"]
    assert data[0]["train"] != data[1]["train"]  # the training sample still follows the seed


def test_corpora_are_real_and_shaped_like_the_source():
    assert len(tasks.plot_sentences()) > 5000 and len(tasks.guardian_headlines()) == 4080
    pair_source = [{"text": "a", "text_pair": "b"}]
    rows = augmentation_rows("plot-sentences", pair_source, AugmentOptions(seed=1, cap=10))
    assert len(rows) == 10 and all(r["text"] and r["text_pair"] for r in rows)
    token_rows = augmentation_rows("guardian-headlines", [{"words": ["x"]}], AugmentOptions(seed=1, cap=5))
    assert all(isinstance(r["words"], list) and r["words"] for r in token_rows)


# ---- the allennlp==0.9.0 fixtures: tiny real files in each local format ------------------------------------------


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    out = tmp_path_factory.mktemp("allennlp-fixtures")
    with zipfile.ZipFile(assets.wheel_path("allennlp")) as zf:
        for name in ("squad.json", "snli.jsonl", "quora_paraphrase.tsv", "conll2003.txt"):
            (out / name).write_bytes(zf.read(f"allennlp/tests/fixtures/data/{name}"))
    return out


def test_squad_json_reader(fixtures):
    rows = tasks.read_squad(str(fixtures / "squad.json"))
    assert len(rows) == 5
    first = rows[0]
    assert first["answers"][0]["text"] == "Saint Bernadette Soubirous"
    for row in rows:
        for ans in row["answers"]:
            assert row["context"][ans["start"] : ans["start"] + len(ans["text"])] == ans["text"]


def test_local_tasks_from_fixture_files(fixtures):
    local = {
        "snli": {"kind": "pair", "train": str(fixtures / "snli.jsonl"), "text": "sentence1",
                 "text_pair": "sentence2", "label": "gold_label", "dev": str(fixtures / "snli.jsonl")},
        "quora": {"kind": "pair", "train": str(fixtures / "quora_paraphrase.tsv"),
                  "columns": ["label", "text", "text_pair", "id"], "dev": str(fixtures / "quora_paraphrase.tsv")},
        "conll": {"kind": "token", "train": str(fixtures / "conll2003.txt"), "dev": str(fixtures / "conll2003.txt")},
        "squad": {"kind": "qa", "train": str(fixtures / "squad.json"), "dev": str(fixtures / "squad.json")},
    }  # fmt: skip
    snli = get_task("snli", local)
    assert snli.labels == ("contradiction", "entailment", "neutral")
    data = snli.load()
    assert len(data["train"]) == len(data["dev"]) == 3
    assert {r["text"] for r in data["train"] + data["dev"]} >= {
        "A person on a horse jumps over a broken down airplane."
    }
    quora = get_task("quora", local).load()
    assert len(quora["dev"]) == 3 and [r["label"] for r in quora["dev"]] == [1, 0, 1]
    conll = get_task("conll", local)
    assert conll.labels == ("O", "I-LOC", "I-ORG", "I-PER")
    sentences = conll.load()["train"]
    assert sorted(len(s["words"]) for s in sentences) == [7, 7]
    first = next(s for s in sentences if s["words"][0] == "U.N.")
    assert [conll.labels[t] for t in first["label"]] == ["I-ORG", "O", "I-PER", "O", "O", "I-LOC", "O"]
    assert len(get_task("squad", local).load()["dev"]) == 5
    preflight(Config.from_dict({"local_tasks": local, "target_task": "conll", "augmentation": ["task:snli"]}))


def test_local_csv_and_parquet(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"sentence": [f"s {i}" for i in range(60)], "score": [i / 10 for i in range(60)]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    for path in ("a.csv", "a.parquet"):
        spec = {"kind": "regression", "train": str(tmp_path / path), "text": "sentence", "label": "score"}
        data = get_task("mine", {"mine": spec}).load()
        assert len(data["train"]) + len(data["dev"]) == 60 and data["dev"]  # dev: 10% of train by hash
        assert all(isinstance(r["label"], float) for r in data["train"])


MALFORMED = [
    ("bad.csv", "text,label\nfine,1\ntoo,many,fields\n", {"kind": "single"}, r"bad.csv:3: expected 2 csv fields"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n', {"kind": "single"}, r"bad.jsonl:2: expected one JSON"),
    ("bad.jsonl", '{"text": "a"}\n', {"kind": "single"}, r"bad.jsonl:1: missing column\(s\) \['label'\]"),
    ("bad.conll", "EU B-ORG\nrejects O extra\n", {"kind": "token"}, r"bad.conll:2: expected 2 columns, got 3"),
    ("bad.csv", "text,label\na,x\n", {"kind": "regression"}, r"bad.csv:2: label 'x' is not a number"),
    ("bad.json", '{"data": [{"paragraphs": [{"context": "abc", "qas": [{"question": "q", "id": "1", '
     '"answers": [{"text": "zz", "answer_start": 0}]}]}]}]}', {"kind": "qa"}, r"answer 'zz' is not at answer_start=0"),
    ("bad.json", "[1, 2", {"kind": "qa"}, r"bad.json:1: not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("filename", "content", "spec", "message"), MALFORMED)
def test_malformed_files_name_file_line_and_expectation(tmp_path, filename, content, spec, message):
    (tmp_path / filename).write_text(content)
    with pytest.raises(DataError, match=message):
        get_task("mine", {"mine": {**spec, "train": str(tmp_path / filename)}}).load()


def test_bad_local_task_specs_fail_in_config():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['path'\]"):
        Config.from_dict({"local_tasks": {"x": {"kind": "single", "train": "a.csv", "path": "b"}}})
    with pytest.raises(ConfigError, match=r"needs kind"):
        Config.from_dict({"local_tasks": {"x": {"kind": "nli", "train": "a.csv"}}})
    with pytest.raises(ConfigError, match=r"local_tasks.x: format None unknown \(from 'a.xlsx'\); allowed: \['conll'"):
        Config.from_dict({"local_tasks": {"x": {"kind": "single", "train": "a.xlsx"}}})
    cfg = Config.from_dict({"local_tasks": {"x": {"kind": "single", "train": "nowhere.csv"}}, "target_task": "x"})
    with pytest.raises(DataError, match=r"nowhere.csv: no such file"):
        get_task("x", cfg.local_tasks).load()


def test_hub_tasks_are_listed_and_fail_offline_with_one_line(monkeypatch):
    assert {"mnli", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb", "squad_v2"} <= set(tasks.TASKS)
    assert len([n for n in tasks.TASKS if n.startswith("wikiann:")]) == 41
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"nyu-mll/glue/rte needs the Hugging Face Hub.*Offline tasks: .*trec6"):
        get_task("rte").load()


def test_tasks_command_lists_hub_and_offline_with_sizes(capsys):
    from xdlib.__main__ import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "squad_v2" in out and "wikiann:sw" not in out and "wikiann:vi" in out
    line = next(line for line in out.splitlines() if line.startswith("trec6 "))
    assert line.split()[4:7] == ["4305", "532", "539"]


# ---- QA features ----------------------------------------------------------------------------------------------


def test_doc_stride_windows_cover_the_answer(tiny_encoder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    context = " ".join(["the movie"] * 20 + ["good"] + ["a plot"] * 5)
    start = context.index("good")
    rows = [{"id": "1", "question": "which", "context": context, "answers": [{"text": "good", "start": start}]},
            {"id": "2", "question": "which", "context": "the film", "answers": []}]  # fmt: skip
    feats = encode_qa(tok, rows, max_length=24, doc_stride=8)
    mine = [f for f in feats if f["example"] == 0]
    assert len(mine) > 2  # 52 context tokens in windows of ~21
    with_answer = [f for f in mine if f["span"] != [0, 0]]
    assert with_answer, "some window holds the answer"
    for f in with_answer:
        s, e = f["span"]
        assert context[f["offsets"][s][0] : f["offsets"][e][1]] == "good"
    assert all(f["span"] == [0, 0] for f in feats if f["example"] == 1)
    for a, b in zip(mine, mine[1:]):  # consecutive windows overlap
        ca = {o for o in a["offsets"] if o}
        assert ca & {o for o in b["offsets"] if o}


# ---- masked-LM augmentation -------------------------------------------------------------------------------------


def test_mlm_augmentation_replaces_words_with_a_real_masked_lm(tmp_path, tiny_encoder):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(tiny_encoder)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)  # the random masked LM's weights, whatever the tests before this one drew from torch
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    source = [{"text": "the movie was really good and the music was fun"}, {"words": ["the", "plot", "was", "dull"]}]
    opts = AugmentOptions(seed=0, mlm_model=str(tmp_path / "mlm"), mlm_probability=0.3)
    out = augmentation_rows("mlm", source, opts)
    assert len(out[0]["text"].split()) == 10 and out[0]["text"] != source[0]["text"]
    assert len(out[1]["words"]) == 4
    assert "[MASK]" not in out[0]["text"]
    assert augmentation_rows("mlm", source, opts) == out  # seeded
    with pytest.raises(ConfigError, match="augment_mlm_model='/nowhere/mlm'"):
        preflight(Config.from_dict({"augmentation": ["mlm"], "augment_mlm_model": "/nowhere/mlm"}))


def test_params_file_with_local_task_round_trips(tmp_path):
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"text": f"w{i}", "label": i % 2}) for i in range(40)))
    (tmp_path / "p.yaml").write_text(f"local_tasks:\n  mine:\n    kind: single\n    train: {tmp_path / 't.jsonl'}\n")
    cfg = load_config("finetune", tmp_path / "p.yaml", {"target_task": "mine"})
    assert get_task("mine", cfg.local_tasks).labels == ("0", "1")


def test_a_new_task_is_one_decorated_loader(monkeypatch, tmp_path, tiny_encoder):
    """The README's recipe: one decorated function registers a task, which then runs like any other."""
    from conftest import smoke_params

    from xdlib.config import Config
    from xdlib.stages import ensure
    from xdlib.tasks import TASKS, register_task, task_names

    monkeypatch.setattr(TASKS, "_items", dict(TASKS._items))  # the registry as it was, after this test

    @register_task("toy-verdict", "single", labels=("against", "for"))
    def load_toy_verdict():
        """Does the one-line review recommend the film?"""
        from xdlib.tasks.toy import TOY_NEGATIVE, TOY_POSITIVE

        rows = [{"text": f"the film was {w}", "label": int(w in TOY_POSITIVE)} for w in TOY_POSITIVE + TOY_NEGATIVE]
        return {"train": rows * 20, "dev": rows * 2, "test": rows * 2}

    assert "toy-verdict" in task_names() and get_task("toy-verdict").source.endswith("load_toy_verdict)")
    params = smoke_params(tmp_path, tiny_encoder) | {"target_task": "toy-verdict", "student": "teacher"}
    run = ensure("finetune", Config.from_dict(params | {"finetune_epochs": 4.0}))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "toy-verdict" and metrics["test_accuracy"] > 0.5 + 0.1  # half the rows are "for"
