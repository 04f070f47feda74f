"""Command line: `xdlib <command>` (the same as `python -m xdlib <command>`); `xdlib --version`.

tasks [--params F]                 every task: kind, metric, origin, split sizes, source
params [stage]                     every parameter of a stage with its default and meaning
run <stage> [--params F] [-p k=v]  one stage (teacher | distill | stilts | finetune); upstream stages run if missing
explain RUN_DIR | <stage> [-p k=v]  the run id, what was hashed, and whether the run is reused, made or remade
sweep <params.yaml> [--dry-run] [--executor inline|direct|local|slurm] [--workers N] [--gpus-per-cell N]
                                   every cell of the grid through the notebooks (papermill); status table
report [--runs D] [--out D] [--html]  tables and figures from the complete runs only (--html: OUT/report.html)
bench [--quick] [--device D]       speed benchmark: ratios vs naive KD, teachers and the matmul peak
export RUN_DIR [--int8] [--out D] [--force]  a run's model as an ONNX folder (xdlib.deploy.serve.load predicts with it)
deploy RUN_DIR... | --params F      ONNX fp32 and int8 against PyTorch: scores and speed (docs/deploy.md)
study <params.yaml> [--html]       sweep, then report (what `make study` runs, with --html)

Each command imports what it needs when it runs (why: a bad argument is refused in one line before torch and
transformers are imported).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

from . import options
from .config import Config, ConfigError, describe, load_config, load_params
from .errors import ERROR_DIR, guarded
from .options import Parser


def parse_overrides(pairs: list[str]) -> dict:
    """-p key=value (value parsed as YAML: 3, 1e-4, true, [a, b]); papermill's -p syntax."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"-p {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_sweep(args, overrides: dict) -> tuple[int, object]:
    from .sweep import sweep

    status = sweep(args.params, overrides, args.dry_run, args.executor, args.workers, gpus_per_cell=args.gpus_per_cell)
    shown = status.drop(columns=["log", "wall_s", "error"]) if args.dry_run else status
    print(shown.fillna("-").to_string(index=False))
    counts = status["state"].value_counts().to_dict()
    print(f"{len(status)} cells: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    failed = int((status["state"] == "failed").sum() + (status["state"] == "blocked").sum())
    if failed:
        print(f"{failed} cell(s) failed; see the error and log columns", file=sys.stderr)
    return (1 if failed else 0), status


def run_report(runs_dir: str, out_dir: str, run_ids: set[str] | None = None, html: bool = False) -> int:
    if not any(Path(runs_dir).glob("*/*/DONE")):
        raise ConfigError(
            f"--runs {runs_dir!r} holds no complete run; allowed: a run store a sweep or make study filled"
        )
    if html:
        from .notebook import require_report_notebook

        require_report_notebook()
    from .report import build_report, html_report

    for path in build_report(runs_dir, out_dir, run_ids):
        print(path)
    if html:  # the report notebook over what was just written, code hidden: one page to open in a browser
        print(html_report(out_dir, runs_dir))
    return 0


def list_tasks(params: str | None) -> None:
    """Every task: kind, main metric, origin and source; split sizes for offline and local tasks (loaded: the
    first call downloads the pinned wheels); Hub tasks are listed without loading."""
    from .tasks import DataError, get_task, task_names

    local = load_params(params).get("local_tasks") if params else None
    print(f"{'task':16s} {'kind':10s} {'metric':9s} {'origin':9s} {'train':>7s} {'dev':>6s} {'test':>6s}  source")
    for name in task_names(local):
        task = get_task(name, local)
        sizes = ["", "", ""]
        if task.origin in ("offline", "local", "generated"):
            try:
                data = task.load()
                sizes = [str(len(data.get(s, []))) for s in ("train", "dev", "test")]
            except DataError as err:
                sizes = ["error", "", ""]
                print(f"  {name}: {err}", file=sys.stderr)
        print(
            f"{name:16s} {task.kind:10s} {task.metric:9s} {task.origin:9s} {sizes[0]:>7s} {sizes[1]:>6s} {sizes[2]:>6s}  {task.source}"
        )
    print("hub tasks need the network; offline tasks are real data packaged on PyPI (sizes after leakage removal)")


class _Version(argparse.Action):
    """`xdlib --version`: computed when asked (git runs only then)."""

    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from . import version_line

        print(version_line())
        parser.exit()


def build_parser() -> Parser:
    parser = Parser(prog="xdlib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="the package version, and the git sha in a checkout")
    sub = parser.add_subparsers(dest="command", required=True)
    p_tasks = sub.add_parser("tasks")
    p_tasks.add_argument("--params", help="also list this params file's local_tasks")
    p_params = sub.add_parser("params")
    p_params.add_argument("stage", nargs="?", default="finetune")
    p_run = sub.add_parser("run")
    p_run.add_argument("stage")
    p_run.add_argument("--params")
    p_run.add_argument("-p", dest="overrides", action="append", default=[])
    options.add(p_run, "--nproc-per-node", default=1, help="processes (DDP ranks) this command starts itself")
    p_explain = sub.add_parser("explain", help="a run's id, what was hashed, and whether it is reused, made or remade")
    p_explain.add_argument("target", help="a run folder, or a stage (teacher, distill, stilts, finetune) with -p")
    p_explain.add_argument("--params")
    p_explain.add_argument("-p", dest="overrides", action="append", default=[])
    for command in ("sweep", "study"):
        p_sweep = sub.add_parser(command)
        p_sweep.add_argument("params")
        p_sweep.add_argument("-p", dest="overrides", action="append", default=[])
        p_sweep.add_argument("--dry-run", action="store_true", help="print the plan and what is done; run nothing")
        options.add(p_sweep, "--executor", default="inline",
                    help="inline (notebooks, default), direct (no notebooks), local or slurm (submitit)")  # fmt: skip
        options.add(p_sweep, "--workers", default=1, help="parallel jobs for the local executor")
        options.add(p_sweep, "--gpus-per-cell", default=1, help="local executor: processes (GPUs) that share a cell")
        if command == "study":
            p_sweep.add_argument("--html", action="store_true", help="also write report.html beside the tables")
    from .deploy.deploy import build_parser as deploy_parser  # argparse only: nothing heavy

    deploy = deploy_parser()
    sub.add_parser("deploy", parents=[deploy], add_help=False, description=deploy.description,
                   formatter_class=argparse.RawDescriptionHelpFormatter,
                   help="ONNX fp32 and int8: accuracy and speed of runs or a params file's models")  # fmt: skip
    p_bench = sub.add_parser("bench")
    p_bench.add_argument("--quick", action="store_true", help="under 3 minutes on 2 cores")
    options.add(p_bench, "--size", default=None)
    options.add(p_bench, "--device", default="auto")
    p_bench.add_argument("--scale", action="store_true", help="only the scale section: transfer sets of 10k-1M rows")
    p_bench.add_argument("--speed", action="store_true", help="only the speed section: base-size teacher, batch 128")
    options.add(p_bench, "--speed-rows", default=20_000, help="transfer-set rows of the speed section")
    options.add(p_bench, "--scale-rows", default="10000,100000,1000000", help="comma-separated transfer-set sizes")
    p_bench.add_argument("--out", default="results/benchmarks")
    p_export = sub.add_parser("export", help="a run's model as an ONNX folder (fp32, or int8 with --int8)")
    p_export.add_argument("run_dir")
    p_export.add_argument("--int8", action="store_true", help="int8 weights (onnxruntime quantize_dynamic)")
    p_export.add_argument("--out", default=None, help="output folder (default: RUN_DIR/onnx, or RUN_DIR/onnx-int8)")
    p_export.add_argument("--force", action="store_true", help="replace an existing output folder")
    p_report = sub.add_parser("report")
    p_report.add_argument("--runs", default="results/runs")
    p_report.add_argument("--out", default="results")
    p_report.add_argument("--html", action="store_true", help="also write OUT/report.html (the report notebook)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also XDLIB_DEBUG=1)")
    return parser


def cmd_params(args) -> int:
    for name, default, help_text in describe(args.stage):
        print(f"{name:26s} {default!r:32s} {help_text}")
    return 0


def cmd_run(args) -> int:
    cfg = load_config(args.stage, args.params, parse_overrides(args.overrides))  # errors before torch is imported
    if args.nproc_per_node > 1 and "RANK" not in os.environ:
        return launch(args, cfg)
    world = os.environ.get("WORLD_SIZE", "1")
    if args.nproc_per_node > 1 and world != str(args.nproc_per_node):  # under a launcher that started its own
        raise ConfigError(f"--nproc-per-node {args.nproc_per_node} under a launcher that started {world} ranks; "
                          "allowed: --nproc-per-node without a launcher (xdlib starts the ranks), or the launcher's "
                          "own rank count (torchrun --nproc-per-node N) without it")  # fmt: skip
    from .stages import ensure

    path = ensure(args.stage, cfg)
    from .dist import is_main

    if is_main():  # one line, also under torchrun
        print(path)
    return 0


def cmd_explain(args) -> int:
    """`explain RUN_DIR` reads the run's config.yaml (its stage from the folder above); `explain STAGE -p …`
    builds the config as `run` does. Prints the run id, the payload it hashes, and each run of the chain with what
    `ensure` would do and why; for a run folder, whether its recorded run_id.json is the payload computed now."""
    import json

    import yaml

    from .config import STAGE_SECTIONS  # the stage names, without importing the stages (torch)

    folder = Path(args.target)
    if folder.is_dir():
        stage = folder.parent.name
        if stage not in STAGE_SECTIONS or not (folder / "config.yaml").is_file():
            raise ConfigError(f"{str(folder)!r} is not a run folder; allowed: a run folder (results/runs/<stage>/"
                              f"<run_id>, with its config.yaml) or a stage ({', '.join(STAGE_SECTIONS)}) with -p")  # fmt: skip
        values = yaml.safe_load((folder / "config.yaml").read_text()) | parse_overrides(args.overrides)
        values.pop("cache_dir", None)  # another machine's path: explain reads no cache
        cfg = Config.from_dict(values | {"runs_dir": str(folder.parent.parent)}, stage)
    elif args.target in STAGE_SECTIONS:
        stage, cfg = args.target, load_config(args.target, args.params, parse_overrides(args.overrides))
    else:
        raise ConfigError(f"{args.target!r} is neither a run folder nor a stage; allowed: a run folder, or one of "
                          f"{', '.join(STAGE_SECTIONS)} with --params / -p")  # fmt: skip
    from .stages import explain  # why here: the stage modules import torch; the config is checked first

    report = explain(stage, cfg)
    print(f"{stage} run {report['run_id']}")
    print("hashed: " + json.dumps(report["payload"], sort_keys=True, default=str))
    if folder.is_dir():
        recorded = folder / "run_id.json"
        same = recorded.is_file() and json.loads(recorded.read_text()) == json.loads(json.dumps(report["payload"]))
        status = "the payload computed now" if same else "missing" if not recorded.is_file() else "another payload"
        print(f"{folder.name}: run_id.json is {status}" + ("" if folder.name == report["run_id"] else
              f"; this config's id today is {report['run_id']}"))  # fmt: skip
    for link in report["chain"]:
        action, why = link["action"]
        print(f"  {link['stage']:9s} {link['run_id']}: {action} ({why})")
    return 0


def study_report_dir(name: str, runs_dir: Path, own_store: bool) -> Path:
    """Where a study's tables and figures go: beside its run store (results/ for results/runs) when the study is the
    default one or its params file names its own `runs_dir`; a study that shares the default store without naming
    one (the scaling study reuses the default's runs) gets a folder of its own name there, so the default's tables
    stay the default study's."""
    parent = runs_dir.parent
    return parent if name == "default" or own_store else parent / name


def study_run_ids(status) -> set[str]:
    """The runs a sweep's cells made or reused, at every stage (the status table's `*_run` columns)."""
    columns = [c for c in status.columns if c.endswith("_run")]
    return {v for c in columns for v in status[c].dropna() if v not in ("", "-")}


def cmd_sweep(args) -> int:
    overrides = parse_overrides(args.overrides)
    if getattr(args, "html", False):  # before the sweep, not after it
        from .notebook import require_report_notebook

        require_report_notebook()
    code, status = run_sweep(args, overrides)
    if args.command == "study" and not args.dry_run:
        runs_dir = Path(load_config("finetune", args.params, overrides).runs_dir)
        values = load_params(args.params)
        name = str(values.get("name") or Path(args.params).stem)
        own = "runs_dir" in values or "runs_dir" in overrides
        out = study_report_dir(name, runs_dir, own)
        code = run_report(str(runs_dir), str(out), study_run_ids(status), args.html) or code
    return code


def _write_raw(report: dict, out: str, kind: str) -> None:
    import json
    import time

    path = Path(out) / f"{kind}-{time.strftime('%Y%m%d-%H%M')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"raw: {path}")


def cmd_bench(args) -> int:
    if args.scale:
        import torch

        from .bench.scale import format_scale
        from .bench.scale import run as run_scale
        from .runs import environment

        report = run_scale(args.scale_rows)  # sizes, checked by options.CHECKS
        report["environment"] = environment(torch.device("cpu"))  # git sha, versions, machine: with the figures
        print(format_scale(report))
        _write_raw(report, args.out, "scale")
    elif args.speed:
        from .bench.speed import run as run_speed

        report = run_speed(rows=args.speed_rows, device=args.device)
        print(report["profile"])
        for name, value in report["ratios"].items():
            print(f"{name}: {value:.3f}")
        _write_raw(report, args.out, "speed")
    else:
        from .bench import format_table, run

        report = run(args.size or ("quick" if args.quick else "full"), args.device, args.out)
        print(format_table(report))
        print(f"wall {report['wall_seconds']:.0f} s; raw timings: {report['json']}")
    return 0


def cmd_export(args) -> int:
    from .deploy.export import export

    print(export(args.run_dir, args.out, int8=args.int8, force=args.force))
    return 0


def cmd_deploy(args) -> int:
    from .deploy.deploy import _deploy  # `python -m xdlib.deploy`'s own command, under this one's error contract

    return _deploy(args)


COMMANDS = {
    "tasks": lambda args: list_tasks(args.params) or 0,
    "params": cmd_params,
    "run": cmd_run,
    "explain": cmd_explain,
    "sweep": cmd_sweep,
    "study": cmd_sweep,
    "report": lambda args: run_report(args.runs, args.out, html=args.html),
    "bench": cmd_bench,
    "export": cmd_export,
    "deploy": cmd_deploy,
}


def launch(args, cfg: Config) -> int:
    """`xdlib run STAGE --nproc-per-node N`: the config and the device are checked once, here; then N ranks of this
    same command start through torch.distributed.run's API (what torchrun does, standalone on this machine). A
    rank's user error is the one line rank 0 prints, and exit status 2, not a launcher traceback."""
    import torch

    from .devices import resolve_device

    n = args.nproc_per_node
    if str(resolve_device(cfg.device)).startswith("cuda"):  # one GPU per rank, checked before any rank starts
        count = torch.cuda.device_count()
        if n > count:
            allowed = f"--nproc-per-node 1 to {count}, or device=cpu" if count else "device=cpu"
            raise ConfigError(f"--nproc-per-node {n} with device={cfg.device} needs {n} CUDA devices (one per rank); "
                              f"this machine has {count}; allowed: {allowed}")  # fmt: skip
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):  # their failure lines, not ours
        logging.getLogger(name).setLevel(logging.CRITICAL)
    argv = ["-m", "xdlib"] + (["--debug"] if args.debug else []) + ["run", args.stage]
    argv += (["--params", args.params] if args.params else []) + [x for pair in args.overrides for x in ("-p", pair)]
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc_per_node, run_id="xdlib",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.5)  # fmt: skip
    from unittest import mock

    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))  # as torchrun
    with tempfile.TemporaryDirectory(prefix="xdlib-ranks-") as notes:
        # the ranks' environment: their threads, and where each writes its user error (errors.guarded); this
        # process's own environment is as it was once they end (a caller's later processes keep every core)
        with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": threads, ERROR_DIR: notes}):
            try:
                elastic_launch(config, sys.executable)(*argv)
            except ChildFailedError as err:
                said = sorted(Path(notes).glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
                if said:  # a user error: the same one line as a single process, printed once, here
                    print(f"error: {said[0].read_text()}", file=sys.stderr)
                    return 2
                print(f"error: {_failed(err.failures, n)}. Rerun the same command to resume from the last "
                      "checkpoint (each rank's output is above)", file=sys.stderr)  # fmt: skip
                return 1
    return 0


def _failed(failures: dict, n: int) -> str:
    """'rank 1 was killed (SIGKILL), of 2 ranks; the launcher stopped the others': each rank that failed, as the
    launcher saw it, less those it stopped itself (SIGTERM) once another had failed."""
    import signal

    def how(code: int) -> str:
        if code < 0:
            try:
                return f"was killed ({signal.Signals(-code).name})"
            except ValueError:
                return f"was killed (signal {-code})"
        return f"exited with status {code}"

    first = {r: f for r, f in failures.items() if f.exitcode != -signal.SIGTERM}  # SIGTERM: the launcher's stop
    said = "; ".join(f"rank {rank} {how(f.exitcode)}" for rank, f in sorted((first or failures).items()))
    # none first: every failed rank was stopped from outside (a SIGTERM to the job), not by the launcher
    stopped = "; the launcher stopped the others" if first and len(first) < n else ""
    return f"{said}, of {n} ranks{stopped}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return guarded(lambda: COMMANDS[args.command](args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
