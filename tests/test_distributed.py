"""Two CPU processes (torchrun, gloo) run teacher -> distill -> finetune as one process does: one run folder per
stage, one teacher cache, the same teacher and distilled weights, and a run killed mid-phase resumes to them."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_same_weights, descendants
from safetensors.torch import load_file

from xdlib.config import Config
from xdlib.stages import ensure


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    from conftest import make_tiny_encoder, smoke_params
    from transformers import AutoConfig

    tmp = tmp_path_factory.mktemp("ddp")
    encoder = make_tiny_encoder(tmp / "encoder")
    config = AutoConfig.from_pretrained(encoder)  # dropout off: its masks are drawn per rank
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    config.save_pretrained(encoder)
    values = smoke_params(tmp, encoder) | {
        "student_init": str(encoder),  # copies the encoder's config, dropout 0 included
        "student_arch": "l2-h64",
        "student_heads": 4,
        "max_train_samples": 96,
        "max_eval_samples": 48,
        "teacher_epochs": 4.0,
        "teacher_lr": 1e-3,  # Adam turns reduction-order noise into steps of about the rate: the weights' margin
        "distill_lr": 1e-3,
        "cache_dtype": "float32",  # fp16 storage would round the two teachers' 1e-6 differences to 1e-3 steps
        "checkpoint_every": 1,
        "device": "cpu",
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path, values


def _torchrun(params: Path, store: Path, *extra: str, nproc: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += ["-m", "xdlib", "run", "finetune", "--params", str(params)]
    command += ["-p", f"runs_dir={store / 'runs'}", "-p", f"cache_dir={store / 'cache'}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def _weights(store: Path, stage: str) -> dict:
    (run,) = (store / "runs" / stage).iterdir()
    return load_file(run / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def single(params, tmp_path_factory) -> Path:
    """The whole chain in this one process: what the launched processes must reproduce."""
    store = tmp_path_factory.mktemp("single")
    values = params[1] | {"runs_dir": str(store / "runs"), "cache_dir": str(store / "cache")}
    ensure("finetune", Config.from_dict(values))
    return store


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The process below `launcher` whose environment says RANK=`rank` (a worker, not its launcher)."""
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"-m" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_a_kill(params, single, tmp_path, capsys):
    """`xdlib run finetune --nproc-per-node 2`: rank 1 is killed inside a distillation phase; rank 0 and the
    launcher stop within 60 s (not at the 30-minute collective timeout) with one line naming the killed rank; a
    single-process resume is refused; torchrun with 2 processes resumes to the single process's weights."""
    path, values = params

    multi = tmp_path / "multi"
    # the single process's teacher (its 2-process training is the accelerate test's): the distillations then start
    # from the same teacher outputs, and only the DDP reduction can tell them apart
    shutil.copytree(single / "runs" / "teacher", multi / "runs" / "teacher")
    command = [sys.executable, "-m", "xdlib", "run", "finetune", "--params", str(path), "--nproc-per-node", "2",
               "-p", f"runs_dir={multi / 'runs'}", "-p", f"cache_dir={multi / 'cache'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while not any((multi / "runs" / "distill").glob("*/checkpoints/*/last/trainer.json")):  # inside a phase
        assert launch.poll() is None, launch.communicate()[1][-3000:]
        assert time.time() < deadline, "no distillation checkpoint within 300 s"
        time.sleep(0.05)
    rank0, rank1 = (_rank_pid(launch.pid, r) for r in (0, 1))
    assert rank0 is not None and rank1 is not None, "no workers with RANK=0 and 1"
    os.kill(rank1, signal.SIGKILL)
    killed = time.time()
    try:
        err = launch.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        for pid in [launch.pid, *descendants(launch.pid)]:
            os.kill(pid, signal.SIGKILL)
        pytest.fail("the launcher and rank 0 still ran 60 s after rank 1 was killed")
    stopped = time.time() - killed
    assert launch.returncode == 1 and not Path(f"/proc/{rank0}").exists(), err[-3000:]  # rank 0 ended too
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 was killed (SIGKILL)") and "resume" in last, err[-3000:]
    assert stopped < 60
    time.sleep(0.5)  # the killed workers' files are closed
    assert not list((multi / "runs" / "distill").glob("*/DONE")), "killed too late: the distillation had finished"

    # a resume with another number of processes (here: this one) is refused in one line
    from xdlib.__main__ import main

    store = ["-p", f"runs_dir={multi / 'runs'}", "-p", f"cache_dir={multi / 'cache'}"]
    assert main(["run", "finetune", "--params", str(path), *store]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading bars: our one line
    assert last.startswith("error: ") and "resume with the same number of processes (2)" in last, last

    resumed = _torchrun(path, multi)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]

    for stage in ("teacher", "distill", "finetune"):  # one run folder per stage, the single process's ids
        names = sorted(p.name for p in (multi / "runs" / stage).iterdir())
        assert names == sorted(p.name for p in (single / "runs" / stage).iterdir()), stage
        assert (multi / "runs" / stage / names[0] / "DONE").is_file()
    caches = sorted(p.name for p in (multi / "cache" / "teacher-outputs").iterdir())
    assert caches == sorted(p.name for p in (single / "cache" / "teacher-outputs").iterdir()) and len(caches) == 2
    provenance = yaml.safe_load(next((multi / "runs" / "distill").glob("*/provenance.json")).read_text())
    assert provenance["world_size"] == 2
    # the same weights, up to float reduction order (a global batch's gradient is summed in one GEMM here and as two
    # halves plus an all-reduce there, with other thread counts): ~1e-7 differences that Adam's normalised steps grow
    # over ~60 updates, most on small-gradient parameters (attention biases, ~1e-2 in size, drift by up to 5e-4).
    # Elementwise rtol 1e-3 with atol 1e-3, and the whole weight vector within 1e-3 relative distance; a wrong loss
    # weight or data split moves weights by ~lr x updates = 6e-2.
    assert_same_weights(_weights(single, "distill"), _weights(multi, "distill"))


@pytest.mark.slow
def test_accelerate_launch_trains_the_same_teacher(params, single, tmp_path):
    """`accelerate launch --multi_gpu` starts the same process group (gloo where there is no GPU)."""
    path, values = params
    (single,) = (single / "runs" / "teacher").iterdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               "-m", "xdlib", "run", "teacher", "--params", str(path), "-p", f"runs_dir={tmp_path / 'two'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (run,) = (tmp_path / "two" / "teacher").iterdir()
    assert run.name == single.name and yaml.safe_load((run / "provenance.json").read_text())["world_size"] == 2
    one, two = (load_file(p / "model" / "model.safetensors") for p in (single, run))
    assert_same_weights(one, two)


@pytest.mark.parametrize(
    "env, args, message",
    [
        (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"},
            ["-p", "device=cuda"],
            "asks for nccl (CUDA), but this machine has no CUDA",
        ),
        ({"WORLD_SIZE": "2"}, [], "RANK, MASTER_ADDR, MASTER_PORT not set"),
        ({"WORLD_SIZE": "two"}, [], "WORLD_SIZE='two' is not allowed"),
    ],
    ids=["nccl-without-cuda", "no-launcher-variables", "bad-world-size"],
)
def test_bad_launches_are_one_line(env, args, message, monkeypatch, capsys, tmp_path):
    from xdlib.__main__ import main

    if torch.cuda.is_available() and "device=cuda" in args:
        pytest.skip("this machine has CUDA")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["run", "teacher", "-p", f"runs_dir={tmp_path}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


LAUNCH_ERRORS = {  # (overrides, what the one line names): the config, the device, and an error met inside the ranks
    "config": (["-p", "logit_loss=cosine"], "logit_loss"),
    "device": (["-p", "device=cuda"], "CUDA"),
    "in the ranks": (["-p", "source_task=rte"], "Hub"),
}


def _launch(how: str, overrides: list[str], store: Path) -> subprocess.CompletedProcess:
    if how == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "xdlib"]
    else:
        command = [sys.executable, "-m", "xdlib"]
    command += ["run", "teacher", "--params", "params/smoke.yaml", "-p", f"runs_dir={store}", *overrides]
    command += ["--nproc-per-node", "2"] if how == "xdlib" else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow  # process launches: in make test, not in make test-fast
@pytest.mark.parametrize("case", sorted(LAUNCH_ERRORS))
def test_a_two_process_launch_fails_on_a_user_error_like_one_process(case, tmp_path):
    """`xdlib run STAGE --nproc-per-node 2`: the config and device are checked before any rank starts, and a user
    error met inside the ranks is rank 0's one line: the whole stderr is that line, exit status 2, no traceback.
    Under plain torchrun only rank 0 prints it (torchrun adds its own report of the failed ranks after it)."""
    overrides, named = LAUNCH_ERRORS[case]
    done = _launch("xdlib", overrides, tmp_path / "a")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: ") and named in lines[0] and "Traceback" not in done.stderr
    if case == "in the ranks":  # torchrun's ranks meet it as the config and device errors: checked twice is enough
        return
    done = _launch("torchrun", overrides, tmp_path / "b")
    assert done.returncode != 0
    assert sum(line.startswith("error: ") for line in done.stderr.splitlines()) == 1, done.stderr[-3000:]


@pytest.mark.slow
def test_xdlib_starts_its_own_ranks(params, tmp_path):
    """`xdlib run teacher --nproc-per-node 2` makes the run with two ranks (world size 2 in its provenance), as
    torchrun does, and prints its folder once."""
    path, _ = params
    command = [sys.executable, "-m", "xdlib", "run", "teacher", "--params", str(path), "--nproc-per-node", "2",
               "-p", f"runs_dir={tmp_path / 'runs'}", "-p", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "teacher").iterdir()
    assert yaml.safe_load((run / "provenance.json").read_text())["world_size"] == 2
    assert done.stdout.count(str(run)) == 1, done.stdout


def _launcher(monkeypatch, codes: dict[int, int] | None = None, said: dict[int, str] | None = None) -> dict:
    """`elastic_launch` replaced: it records what it was asked to start, and fails as `codes` (rank -> exit status,
    negative for a signal) say, each rank in `said` having written its user error's line as errors.guarded does."""
    import torch.distributed.launcher.api as api
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from xdlib.errors import ERROR_DIR

    seen: dict = {}

    def elastic_launch(config, entrypoint):
        def start(*argv):
            seen.update(config=config, entrypoint=entrypoint, argv=list(argv))
            for rank, text in (said or {}).items():
                (Path(os.environ[ERROR_DIR]) / f"rank-{rank}.txt").write_text(text)
            if codes:
                failures = {r: ProcessFailure(local_rank=r, pid=0, exitcode=c, error_file="") for r, c in codes.items()}
                raise ChildFailedError("xdlib", failures)

        return start

    monkeypatch.setattr(api, "elastic_launch", elastic_launch)
    return seen


def test_the_ranks_get_the_same_command_with_debug_before_it(monkeypatch, tmp_path):
    from xdlib.__main__ import main

    monkeypatch.delenv("RANK", raising=False)
    seen = _launcher(monkeypatch)
    args = ["run", "teacher", "--params", "params/smoke.yaml", "--nproc-per-node", "2", "-p", f"runs_dir={tmp_path}"]
    assert main(["--debug", *args]) == 0
    assert seen["argv"] == ["-m", "xdlib", "--debug", "run", "teacher", "--params", "params/smoke.yaml", "-p",
                            f"runs_dir={tmp_path}"]  # fmt: skip
    assert seen["config"].nproc_per_node == 2 and seen["config"].max_restarts == 0
    assert main(args) == 0 and "--debug" not in seen["argv"]


LINE = "bad value 'x' for teacher_lr; allowed: a number > 0"
# fmt: off
FAILURES = {  # the ranks' exit statuses, the user errors they wrote -> the launcher's exit status, its line, not in it
    "rank 0's user error": ({0: 2, 1: -15}, {0: LINE}, 2, f"error: {LINE}", ""),
    "rank 1's user error, rank 0 stopped first": ({0: -15, 1: 2}, {1: LINE}, 2, f"error: {LINE}", ""),
    "both ranks' user errors": ({0: 2, 1: 2}, {0: LINE, 1: "rank 1's"}, 2, f"error: {LINE}", "rank 1's"),
    "rank 1 killed": ({0: -15, 1: -9}, {}, 1,
                      "error: rank 1 was killed (SIGKILL), of 2 ranks; the launcher stopped the others. Rerun", "rank 0"),
    "rank 0 failed": ({0: 1}, {}, 1, "error: rank 0 exited with status 1, of 2 ranks; the launcher stopped", "rank 1"),
    "both failed": ({0: 1, 1: 1}, {}, 1, "error: rank 0 exited with status 1; rank 1 exited with status 1, of 2 ranks. "
                    "Rerun", "launcher stopped"),
    "both stopped from outside": ({0: -15, 1: -15}, {}, 1,
                                  "error: rank 0 was killed (SIGTERM); rank 1 was killed (SIGTERM), of 2 ranks. Rerun",
                                  "launcher stopped"),
}
# fmt: on


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_the_launcher_turns_the_ranks_failures_into_one_line(case, monkeypatch, tmp_path, capsys):
    """A user error any rank met is its one line, once, whichever rank stopped first; any other failure names each
    rank that failed and how, less those the launcher stopped."""
    from xdlib.__main__ import main
    from xdlib.errors import ERROR_DIR

    codes, said, status, has, lacks = FAILURES[case]
    monkeypatch.delenv("RANK", raising=False)
    threads = os.environ.get("OMP_NUM_THREADS")
    _launcher(monkeypatch, codes, said)
    args = ["run", "teacher", "--params", "params/smoke.yaml", "--nproc-per-node", "2", "-p", f"runs_dir={tmp_path}"]
    assert main(args) == status
    err = capsys.readouterr().err
    assert err.startswith(has) and err.count("\n") == 1, err
    assert status != 2 or err == has + "\n", err
    assert not lacks or lacks not in err, err
    assert ERROR_DIR not in os.environ and os.environ.get("OMP_NUM_THREADS") == threads  # as before the launch


def test_nproc_per_node_under_a_launcher_must_match_its_ranks(monkeypatch, tmp_path, capsys):
    from xdlib.__main__ import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    args = ["run", "teacher", "--params", "params/smoke.yaml", "--nproc-per-node", "2", "-p", f"runs_dir={tmp_path}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --nproc-per-node 2 under a launcher that started 4 ranks; allowed:"), err
    assert err.count("\n") == 1 and not list(tmp_path.iterdir())


def test_n_ranks_on_cuda_need_n_devices_before_any_starts(monkeypatch, tmp_path, capsys):
    from xdlib.__main__ import main

    monkeypatch.delenv("RANK", raising=False)
    seen = _launcher(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = ["run", "teacher", "--params", "params/smoke.yaml", "-p", f"runs_dir={tmp_path}", "-p", "device=cuda"]
    assert main([*args, "--nproc-per-node", "2"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --nproc-per-node 2 with device=cuda needs 2 CUDA devices (one per rank); this machine has "
                   "1; allowed: --nproc-per-node 1 to 1, or device=cpu\n") and not seen  # fmt: skip
