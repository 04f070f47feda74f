"""What a table row is, what it is compared with, and how: like with like, with statistics that say what they mean.

- A row (a model variant) is every fine-tuning run whose run id is the same but for the seeds: every config field
  that enters the run id of that run (`run_fields`: `row_fields` of its kind and student_init, read off the
  configs' own run ids, so a field one run's id reads and another's does not, as the twin's teacher_model, follows
  config.py), the precision each stage computed in and the source task's version. The target task is the column;
  a target with runs of two task versions is two columns (`target`, e.g. "trec6 v2").
- A control (the undistilled twin, STILTs, the teacher's pretrained model) is matched to a row on every field its
  own run id depends on; where no run matches, the table says "no matched control".
- A difference against a control is paired by (target, fine-tuning seed), over the seeds with a pair on every
  target: each seed's difference averaged over the targets (each weighs the same), their mean over the S seeds and
  a 95% Student-t interval over them (S - 1 degrees of freedom: the targets of one seed are not independent
  draws). Fewer than two such seeds: no interval.

`transfer_table` is the study's question in one table: what each model transfers to the targets that are not its
source task, and what distillation adds over its controls. Pure functions of the fine-tuning scores
(`report.finetune_scores`); `report.build_report` writes `results/tables/transfer.csv|md` (and `tables/dev/`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math

import numpy as np
import pandas as pd

from .config import UNHASHED, Config

SEEDS = ("seed", "finetune_seed")  # what the runs of one row differ in
NOT_A_RESULT = ("save_model",)  # keeps the weights of the same training (report.without_copies counts it once)
KINDS = ("distilled", "undistilled", "stilts", "teacher")  # anything else: a model named by HF id or folder
CONTROLS = (("undistilled", "undistilled twin"), ("stilts", "STILTs"), ("teacher", "teacher's model"))
NO_CONTROL = "no matched control"
NOT_LEARNT = " †"  # marks a model that did not learn (`metrics.learning_check`): never a result


def flat(value):
    """A config value as one table cell: lists joined with '+' ('-' when empty), mappings as sorted JSON."""
    if isinstance(value, list):
        return "+".join(map(str, value)) if value else "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _probe(value):
    """Another value of the same kind (never validated: only hashed into a run id)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7 if isinstance(value, int) else value + 0.125
    if isinstance(value, str):
        return value + "-probe"
    if isinstance(value, list):
        return [*value, "probe"]
    if isinstance(value, dict):
        return {**value, "probe": 1}
    return "probe"


@functools.cache
def row_fields(student: str, student_init: str | None = None) -> tuple[str, ...]:
    """What a fine-tuning run of this kind (distilled, undistilled, stilts, teacher, or a named model) and this
    student_init (None: the default) is grouped and matched on: `student`, every config field that changes its run
    id when changed alone (found by asking `stages.run_id` itself, on a config of that kind and init, so
    this follows config.py, also where a field is read only for some inits: the twin's and STILTs' teacher_model),
    except the seeds, `save_model` and `target_task` (the column); then what the run ids hold beside the fields:
    config.ENGINE_VERSION as the run recorded it (`engine_version` in metrics.json or provenance.json; 1 where
    absent), the precision of the run (`precision`), of its upstream distillation or STILTs model
    (`upstream_precision`) and of the teacher above that (`teacher_precision`), and the source task's version
    (`source_version`)."""
    from .stages import STAGES, run_id  # why here: the stage modules import torch; the report needs them only now

    init = {} if student_init is None else {"student_init": student_init}
    base = Config(device="cpu", student=student if student in KINDS else "probe/model", **init)
    ref = run_id("finetune", base)
    skip = {*SEEDS, *NOT_A_RESULT, "target_task", "student"}
    names = [
        f.name
        for f in dataclasses.fields(Config)
        if f.metadata["section"] not in UNHASHED and f.name not in skip and _changes_id(base, f.name, ref)
    ]
    lineage = ["engine_version", "precision"]
    upstream = STAGES["finetune"].upstream(base)
    if upstream is not None:
        lineage += ["upstream_precision", "source_version"]
        if STAGES[upstream].upstream(base) is not None:
            lineage.append("teacher_precision")
    return ("student", *names, *lineage)


def _kinds(ft: pd.DataFrame) -> pd.Series:
    return ft["student"].astype(str) if "student" in ft else pd.Series("distilled", index=ft.index)


def _init(value) -> str | None:
    """A run's student_init as `row_fields` takes it (None where its config lacks it: the default)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def run_fields(ft: pd.DataFrame) -> pd.Series:
    """Each run's `row_fields`, asked with its own kind and student_init."""
    inits = ft["student_init"] if "student_init" in ft else pd.Series(None, index=ft.index, dtype=object)
    return pd.Series(
        [row_fields(kind, _init(init)) for kind, init in zip(_kinds(ft), inits)], index=ft.index, dtype=object
    )


def _changes_id(base, name: str, ref: str) -> bool:
    """Whether changing `name` alone changes the run id (a probe value the config refuses: assumed it does)."""
    try:
        from .stages import run_id

        return run_id("finetune", dataclasses.replace(base, **{name: _probe(getattr(base, name))})) != ref
    except Exception:
        return True


def setting_text(value) -> str:
    """A setting as a key and a label show it: 1000 (not 1000.0, which a column with gaps makes of an integer)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def key_frame(ft: pd.DataFrame) -> pd.DataFrame:
    """Every field a row can be keyed on (the union of `run_fields` over the runs in `ft`), as strings; a field
    a run's config lacks (a run made before the field) reads as its default, as its run id does."""
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(Config)
    }
    names = list(dict.fromkeys(n for fields in dict.fromkeys(run_fields(ft)) for n in fields))
    out = {}
    for name in names:
        column = ft[name] if name in ft else pd.Series(None, index=ft.index, dtype=object)
        if name in defaults and defaults[name] is not None:
            column = column.astype(object).where(column.notna(), flat(defaults[name]))
        out[name] = column.map(setting_text)
    return pd.DataFrame(out, index=ft.index)


def row_keys(ft: pd.DataFrame, keys: pd.DataFrame | None = None) -> pd.Series:
    """Each run's row: 'field=value|...' over its own `run_fields`."""
    keys = key_frame(ft) if keys is None else keys
    return pd.Series(
        ["|".join(f"{n}={keys.at[i, n]}" for n in fields) for i, fields in run_fields(ft).items()], index=ft.index
    )


def finetune_seed(frame: pd.DataFrame) -> pd.Series:
    """The fine-tuning seed of each run (finetune_seed, or seed where it is unset)."""
    seed = frame["seed"] if "seed" in frame else pd.Series(0, index=frame.index)
    if "finetune_seed" not in frame:
        return seed.astype(int)
    return frame["finetune_seed"].where(frame["finetune_seed"].notna(), seed).astype(int)


def did_not_learn(frame: pd.DataFrame, column: str = "m_learnt") -> pd.Series:
    """Where a run's recorded learning check (`metrics.learning_check`) says it did not learn. A run without one
    (made before the check) is unknown: never counted as a failure."""
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].map(lambda v: not pd.isna(v) and not bool(v)).astype(bool)


def seed_did_not_learn(ft: pd.DataFrame) -> pd.Series:
    """Where a fine-tuning run did not learn its target, or the model it started from did not learn its source
    (`upstream_learnt`, `report.finetune_scores`): a score that is not a result."""
    return did_not_learn(ft) | did_not_learn(ft, "upstream_learnt")


def known_learnt(values) -> bool | None:
    """False where any value says a run did not learn, True where every value says it learnt, None (unknown:
    a run made before the learning check) otherwise."""
    values = list(values)
    known = [bool(v) for v in values if not pd.isna(v)]
    if not all(known):
        return False
    return True if values and len(known) == len(values) else None


def model_learnt(runs: pd.DataFrame) -> bool | None:
    """Whether the model of these fine-tuning runs learnt (`known_learnt`): each fine-tuning its target and, for a
    distilled or STILTs model, the run it came from its source (`upstream_learnt`, `report.finetune_scores`)."""
    values = list(runs["m_learnt"]) if "m_learnt" in runs else [None]
    sourced = _kinds(runs).isin(["distilled", "stilts"])
    if sourced.any():
        values += list(runs.loc[sourced, "upstream_learnt"]) if "upstream_learnt" in runs else [None]
    return known_learnt(values)


def _target(frame: pd.DataFrame) -> pd.Series:
    return frame["target"] if "target" in frame else frame["target_task"]


def _over_targets(runs: pd.DataFrame, targets: list[str]) -> tuple[float, float, int]:
    """(mean over targets of each target's mean score, sd over seeds of the per-seed mean over targets, seeds
    that cover every target): each target weighs the same; the sd is a spread between seeds, not an interval."""
    runs = runs[_target(runs).isin(targets)]
    if not targets or _target(runs).nunique() < len(targets):
        return np.nan, np.nan, 0
    mean = runs.groupby(_target(runs))["score"].mean().mean()
    per_seed = runs.assign(fseed=finetune_seed(runs), col=_target(runs))
    per_seed = per_seed.pivot_table(index="fseed", columns="col", values="score").dropna()
    spread = per_seed.mean(axis=1).std(ddof=1) if len(per_seed) > 1 else np.nan
    return mean, spread, len(per_seed)


def _pairs(runs: pd.DataFrame, targets: list[str]) -> pd.Series:
    """Mean score per (target, fine-tuning seed) over the given targets."""
    runs = runs[_target(runs).isin(targets)]
    return runs.groupby([_target(runs), finetune_seed(runs)])["score"].mean()


def paired_difference(mine: pd.DataFrame, other: pd.DataFrame, targets: list[str]) -> dict:
    """`mine` - `other`, paired by (target, fine-tuning seed) over the seeds with a pair on every target (the seeds
    `_over_targets` counts): each seed's difference averaged over the targets (each weighs the same); their mean
    over the S seeds and a 95% Student-t interval over them (S - 1 degrees of freedom: the differences of one seed
    share its draw, so its targets are not independent pairs; only with S >= 2); S (`seeds`), the targets, the
    per-target mean differences over those seeds and their sd (the spread between targets, not an uncertainty),
    and the targets without a pair (then no difference is given: it would not cover the same targets)."""
    diff = (_pairs(mine, targets) - _pairs(other, targets)).dropna()
    covered = set(diff.index.get_level_values(0)) if len(diff) else set()
    out = {"mean": np.nan, "low": np.nan, "high": np.nan, "seeds": 0, "targets": len(targets), "spread": np.nan,
           "per_target": "", "missing": [t for t in targets if t not in covered]}  # fmt: skip
    if out["missing"] or diff.empty:
        return out
    per_seed = diff.unstack(level=0).dropna()  # fine-tuning seed x target: the seeds paired on every target
    if per_seed.empty:
        return out
    by_seed, per_target = per_seed.mean(axis=1), per_seed.mean()
    out.update(mean=by_seed.mean(), seeds=len(by_seed))
    out["per_target"] = ", ".join(f"{t} {d:+.1f}" for t, d in per_target.items())
    if len(per_target) > 1:
        out["spread"] = per_target.std(ddof=1)
    out["low"], out["high"] = t_interval(by_seed)
    return out


def t_interval(values: pd.Series) -> tuple[float, float]:
    """The 95% Student-t interval of the mean of `values` (n - 1 degrees of freedom); NaN with fewer than two."""
    if len(values) < 2:
        return np.nan, np.nan
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean() - half, values.mean() + half


def _teacher_sources(runs: pd.DataFrame) -> set[str]:
    """The tasks a multi-source teacher was fine-tuned on before the source task (also not transfer targets)."""
    if "teacher_sources" not in runs:
        return set()
    value = runs["teacher_sources"].iloc[0]
    if isinstance(value, (list, tuple)):
        return set(value)
    return set() if pd.isna(value) or value in ("", "-") else set(str(value).split("+"))


def matched(
    ft: pd.DataFrame, keys: pd.DataFrame, mine: pd.DataFrame, student: str, fields: pd.Series | None = None
) -> pd.DataFrame:
    """The runs of kind `student` whose every field of their own run id (`run_fields`, `fields` where given) equals
    the row's (one row at most: those fields are its key). The undistilled twin of a student that is the whole of
    its initialisation (an l6-h384 from all six layers of all-MiniLM-L6-v2) is that model fine-tuned directly, which
    is what the `teacher` runs of a teacher of that model are: where no undistilled run matches, they do."""
    fields = run_fields(ft) if fields is None else fields
    ref = keys.loc[mine.index[0]]
    if student == "undistilled" and _whole_model(mine):
        twin = _matching(ft, keys, student, fields, ref)
        if not twin.empty:
            return twin
        ref = ref.copy()
        ref["teacher_model"] = ref["student_init"]
        return _matching(ft, keys, "teacher", fields, ref)
    return _matching(ft, keys, student, fields, ref)


def _matching(ft: pd.DataFrame, keys: pd.DataFrame, student: str, fields: pd.Series, ref: pd.Series) -> pd.DataFrame:
    same = _kinds(ft) == student
    if not same.any():
        return ft[same]
    groups: dict[tuple[str, ...], list] = {}
    for i in ft.index[same]:
        groups.setdefault(fields[i], []).append(i)
    hits = set()
    for own, index in groups.items():
        names = [n for n in own if n != "student"]
        candidates = keys.loc[index, names]
        hits.update(candidates.index[(candidates == ref[names]).all(axis=1)])
    return ft[ft.index.isin(hits)]


@functools.cache
def whole_arch(ref: str) -> str | None:
    """The lN-hH shape of the pretrained model `ref` names (None where its config cannot be read offline)."""
    try:
        from .references import model_config

        config = model_config(ref, network=False)
    except Exception:
        return None
    return None if config is None else f"l{config.num_hidden_layers}-h{config.hidden_size}"


def _whole_model(runs: pd.DataFrame) -> bool:
    """Whether the runs' student is the whole of its pretrained initialisation: its shape, every layer, its own
    embeddings and heads."""
    run = runs.iloc[0]
    init = _init(run.get("student_init"))
    if init is None or init == "random" or whole_arch(init) != run.get("student_arch"):
        return False
    defaults = {"student_layers": None, "student_heads": None, "student_embeddings": "init",
                "freeze_word_embeddings": False}  # fmt: skip
    return all(_init(run.get(name)) in (None, str(value)) for name, value in defaults.items())


def transfer_table(ft: pd.DataFrame) -> pd.DataFrame:
    """One row per trained variant (distilled or STILTs, with a source task): its mean over the targets that are
    not its sources (± sd over fine-tuning seeds), the same for each matched control (undistilled twin, STILTs,
    the teacher's pretrained model) and the paired difference against it with its 95% t interval."""
    if ft.empty:
        return pd.DataFrame()
    keys, fields = key_frame(ft), run_fields(ft)
    rows = []
    sourced = ft[ft["student"].isin(["distilled", "stilts"])]
    for variant, mine in sourced.groupby("variant"):
        source = mine["source_task"].iloc[0]
        excluded = {source} | _teacher_sources(mine)
        targets = sorted(set(_target(mine)[~mine["target_task"].isin(excluded)]))
        mean, spread, seeds = _over_targets(mine, targets)
        row = {"variant": variant, "student": mine["student"].iloc[0], "source": source, "targets": len(targets),
               "mean": mean, "sd_over_seeds": spread, "seeds": seeds, "learnt": model_learnt(mine)}  # fmt: skip
        for name, _ in CONTROLS:
            itself = mine["student"].iloc[0] == name
            other = mine if itself else matched(ft, keys, mine, name, fields)
            label = NO_CONTROL if other.empty else other["variant"].iloc[0]
            mean, spread, seeds = _over_targets(other, targets)
            row.update({f"{name}_control": label, f"{name}_mean": mean, f"{name}_sd_over_seeds": spread,
                        f"{name}_seeds": seeds, f"{name}_learnt": None if other.empty else model_learnt(other)})  # fmt: skip
            diff = paired_difference(mine, other, targets) if not (itself or other.empty) else {}
            row.update({
                f"vs_{name}": diff.get("mean", np.nan), f"vs_{name}_ci95_low": diff.get("low", np.nan),
                f"vs_{name}_ci95_high": diff.get("high", np.nan), f"vs_{name}_seeds": diff.get("seeds", 0),
                f"vs_{name}_targets": diff.get("targets", 0),
                f"vs_{name}_spread_between_targets": diff.get("spread", np.nan),
                f"vs_{name}_per_target": diff.get("per_target", ""),
                f"vs_{name}_unpaired_targets": "+".join(diff.get("missing", [])),
            })  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def mean_cell(mean, sd, seeds) -> str:
    """'69.1 ± 1.7 (3 seeds)'; a one-seed mean is flagged and never gets a ±."""
    if pd.isna(mean):
        return "n/a"
    if seeds > 1 and not pd.isna(sd):
        return f"{mean:.1f} ± {sd:.1f} ({seeds} seeds)"
    return f"{mean:.1f} (1 seed)" if seeds == 1 else f"{mean:.1f} (no seed on every target)"


def _difference_cell(row: pd.Series, name: str, itself: bool) -> str:
    if itself:
        return "—"
    if row[f"{name}_control"] == NO_CONTROL:
        return NO_CONTROL
    mean, seeds, targets = row[f"vs_{name}"], row[f"vs_{name}_seeds"], row[f"vs_{name}_targets"]
    if pd.isna(mean):
        missing = str(row[f"vs_{name}_unpaired_targets"]).replace("+", ", ")
        return f"n/a (no pair on {missing})" if missing else "n/a (no seed paired on every target)"
    if pd.isna(row[f"vs_{name}_ci95_low"]):
        return f"{mean:+.1f} (1 seed, {_count(targets, 'target')})"
    low, high = row[f"vs_{name}_ci95_low"], row[f"vs_{name}_ci95_high"]
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}] (n={seeds} seeds, {_count(targets, 'target')})"


def _count(n, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


INTERVAL = (
    "95% t interval over fine-tuning seeds (each seed's difference averaged over the targets; S−1 degrees of freedom)"
)
TRANSFER_NOTE = (
    "Mean: over the non-source targets (each weighs the same) of each target's mean over fine-tuning seeds; ± is "
    "the sd over seeds of the per-seed mean, a spread between seeds, not an interval; '1 seed': one run per target, "
    "no spread. vs a control: the difference paired by (target, fine-tuning seed) over the S seeds with a pair on "
    "every target (n), its mean and " + INTERVAL + "; with one such seed, no interval. A control is matched on "
    "every setting its run id depends on (`comparison.row_fields`): '"
    + NO_CONTROL
    + "' where no such run exists. The per-target differences (descriptive) and their spread (not an uncertainty) "
    "are in the csv. The twin of a student that is the whole of its initialisation (an l6-h384 from all of "
    "all-MiniLM-L6-v2) is that model fine-tuned directly: where no undistilled run matches, the teacher control "
    "runs of that model are its twin (transfer.csv's undistilled_control column names the runs each row was paired "
    "with)."
)


TRANSFER_MARK_NOTE = (
    f" {NOT_LEARNT.strip()}: a model that did not learn (`learning_check.md`): its distilled student (or STILTs "
    "model) at or below the best constant prediction + margin on its source's dev rows, or a fine-tuning seed at "
    "or below it on a target's. A marked row or control is not a result: no reading rests on its differences."
)


def transfer_markdown(table: pd.DataFrame, split: str = "test") -> str:
    """The table as a reader scans it, then a note that says what each number is."""
    if table.empty:
        return ""
    failed = _failed(table, "learnt")
    out = {
        "variant": table["variant"] + failed,
        "non-source targets": table["targets"],
        "mean (± sd over seeds)": [mean_cell(*v) for v in zip(table["mean"], table["sd_over_seeds"], table["seeds"])],
    }
    for name, label in CONTROLS:
        columns = [table[f"{name}_{c}"] for c in ("control", "mean", "sd_over_seeds", "seeds")]
        cells = [NO_CONTROL if c == NO_CONTROL else mean_cell(m, s, n) for c, m, s, n in zip(*columns)]
        out[label] = cells + _failed(table, f"{name}_learnt")
        failed += _failed(table, f"{name}_learnt")
    for name, label in CONTROLS:
        out[f"vs {label}: mean [95% t CI] (n seeds)"] = [
            _difference_cell(row, name, itself=row["student"] == name) for _, row in table.iterrows()
        ]
    out["per target vs twin"] = table["vs_undistilled_per_target"]
    scores = "test" if split == "test" else f"{split} (the split fine-tuning selects on)"
    note = f"Scores: {scores}, x100. {TRANSFER_NOTE}" + (TRANSFER_MARK_NOTE if failed.str.len().any() else "")
    return pd.DataFrame(out).to_markdown(index=False) + "\n\n" + note


def _failed(table: pd.DataFrame, column: str) -> pd.Series:
    """The mark where `column` says the model did not learn (False; None or absent: unknown, never marked)."""
    return did_not_learn(table, column).map({True: NOT_LEARNT, False: ""})


def target_column(frame: pd.DataFrame) -> pd.Series:
    """The target column of each run (`finetune_scores`' `target`; target_task for frames made without it)."""
    return frame["target"] if "target" in frame else frame["target_task"]


def difference_matrix(ft: pd.DataFrame, control: str = "undistilled", marks: bool = False) -> pd.DataFrame:
    """The paper's transfer figure as differences: one row per distilled variant (its source task in its label), one
    column per target, each cell the variant's score minus its matched `control`'s, averaged over the fine-tuning
    seeds paired on that target (NaN: the variant's own source, or no matched control or pair). With `marks`, the
    same frame of booleans instead: whether a model in the cell did not learn (the student's distillation, or a
    fine-tuning of the student or its control on that target; `did_not_learn`)."""
    distilled = ft[_kinds(ft) == "distilled"] if not ft.empty else ft
    if distilled.empty:
        return pd.DataFrame()
    keys, fields = key_frame(ft), run_fields(ft)
    targets = sorted(set(_target(ft)))
    rows = {}
    for variant, mine in distilled.groupby("variant"):
        other = matched(ft, keys, mine, control, fields)
        excluded = {mine["source_task"].iloc[0]} | _teacher_sources(mine)
        cells = {}
        for target in targets:
            if marks:  # each side's runs on this target, and the student's distillation
                both = pd.concat([mine[_target(mine) == target], other[_target(other) == target]])
                cells[target] = bool(seed_did_not_learn(both).any())
                continue
            pairs = (_pairs(mine, [target]) - _pairs(other, [target])).dropna() if not other.empty else pd.Series()
            cells[target] = pairs.mean() if target not in excluded and len(pairs) else np.nan
        rows[variant] = cells
    return pd.DataFrame(rows).T[targets]


# The paper's three axes: a pair of distilled rows that differ in one of these settings alone (and in what follows
# from it: another source task has its own task version) is that axis's comparison.
AXES = {"source_task": ("source_version",), "augmentation": (), "student_arch": ()}


def axis_table(ft: pd.DataFrame) -> pd.DataFrame:
    """Each pair of distilled rows that differ in one axis setting alone (`AXES`): the paired difference between
    them (the first minus the second, in sorted order of that setting) over the targets that are neither's
    source, paired by (target, fine-tuning seed) as `paired_difference`, with its 95% t interval over seeds."""
    dist = ft[_kinds(ft) == "distilled"] if not ft.empty else ft
    if dist.empty:
        return pd.DataFrame()
    keys = key_frame(dist)
    first = {variant: index[0] for variant, index in dist.groupby("variant").groups.items()}
    rows = []
    for a, b in itertools.combinations(sorted(first), 2):
        ka, kb = keys.loc[first[a]], keys.loc[first[b]]
        differ = {n for n in keys.columns if ka[n] != kb[n]}
        for axis, follows in AXES.items():
            if axis not in differ or differ - {axis, *follows}:
                continue
            (x, kx), (y, ky) = sorted([(a, ka), (b, kb)], key=lambda p: p[1][axis])
            mine, other = dist[dist["variant"] == x], dist[dist["variant"] == y]
            excluded = {mine["source_task"].iloc[0], other["source_task"].iloc[0]}
            excluded |= _teacher_sources(mine) | _teacher_sources(other)
            targets = sorted(set(_target(mine)) & set(_target(other)) - excluded)
            diff = paired_difference(mine, other, targets)
            rows.append({"axis": axis, "first": f"{axis}={kx[axis]}", "second": f"{axis}={ky[axis]}",
                         "first_variant": x, "second_variant": y, "targets": "+".join(targets),
                         "difference": diff["mean"], "ci95_low": diff["low"], "ci95_high": diff["high"],
                         "seeds": diff["seeds"], "per_target": diff["per_target"]})  # fmt: skip
    return pd.DataFrame(rows)


def axis_markdown(table: pd.DataFrame, split: str = "test") -> str:
    if table.empty:
        return ""
    cells = []
    for _, row in table.iterrows():
        if pd.isna(row["difference"]):
            cells.append("n/a (no seed paired on every target)")
        elif pd.isna(row["ci95_low"]):
            cells.append(f"{row['difference']:+.1f} (1 seed: no interval)")
        else:
            cells.append(f"{row['difference']:+.1f} [{row['ci95_low']:+.1f}, {row['ci95_high']:+.1f}] "
                         f"(n={row['seeds']} seeds)")  # fmt: skip
    out = pd.DataFrame({"axis": table["axis"], "first": table["first_variant"], "minus": table["second_variant"],
                        "targets": table["targets"].str.replace("+", ", "), "difference [95% t CI]": cells,
                        "per target": table["per_target"]})  # fmt: skip
    scores = "test" if split == "test" else f"{split} (the split fine-tuning selects on)"
    return out.to_markdown(index=False) + (
        f"\n\nScores: {scores}, x100. Each row: two distilled students that differ in one axis setting alone, "
        "the first minus the second over the targets that are neither's source, paired by (target, fine-tuning "
        "seed); " + INTERVAL + "; with one paired seed, no interval."
    )
