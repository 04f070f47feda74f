"""The user's mistakes, told in one line.

Every error a user can cause (a bad config value, a malformed data file, a missing model or package) derives from
`UserError`. The command line prints it as `error: …` with exit status 2; Jupyter and papermill show the same one
line instead of a traceback (IPython's `_render_traceback_` hook), and papermill raises it as the notebook's one
exception. A traceback is for our own bugs (and for --debug / XDLIB_DEBUG=1).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class UserError(Exception):
    """Bad input: the message names the key or file:line, the value, and what is allowed."""

    def _render_traceback_(self) -> list[str]:  # IPython: these lines instead of the traceback
        if os.environ.get("XDLIB_DEBUG", "") not in ("", "0"):
            import traceback

            return traceback.format_exception(self)
        return [f"error: {one_line(self)}"]


class ConfigError(UserError, ValueError):
    """A bad config value: the message names the key, the value and what is allowed."""


class PeerFailed(UserError):
    """Rank 0 failed in a step that every rank waits for: the other ranks stop with it, silently (rank 0 prints)."""


def rank() -> int:
    """This process's rank under a launcher (torchrun, accelerate, srun, `--nproc-per-node`); 0 alone."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


# `xdlib run --nproc-per-node N` sets this in its ranks: a rank's user error goes to DIR/rank-R.txt, and the launcher
# prints it (one line, whichever rank stopped first), so the ranks themselves print none
ERROR_DIR = "XDLIB_RANK_ERRORS"


def guarded(fn, debug: bool = False) -> int:
    """`fn()`'s exit status, with the command line's error contract: a user error is one line and exit status 2, a
    run-time failure one line and exit status 1 (the traceback with --debug or XDLIB_DEBUG=1)."""
    debug = debug or os.environ.get("XDLIB_DEBUG", "") not in ("", "0")
    try:
        return fn()
    except UserError as err:  # the user's input (or the machine's): exit 2, one line
        if debug:
            raise
        if os.environ.get(ERROR_DIR):
            if not isinstance(err, PeerFailed):  # whole or absent: the launcher never reads half a line
                from .runs import atomic_write

                atomic_write(os.path.join(os.environ[ERROR_DIR], f"rank-{rank()}.txt"), one_line(err))
        elif rank() == 0:  # every rank meets the same error: one line, from rank 0
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `xdlib tasks | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and Python's exit flush stays quiet
        return 0
    except Exception as err:  # a failure at run time: one line, the traceback with --debug or XDLIB_DEBUG=1
        if debug:
            raise
        if disk_full(err):  # the machine's state, not our bug: what to do about it
            where = f" writing {err.filename}" if isinstance(err, OSError) and err.filename else ""
            print(f"error: the disk is full{where}; free space and rerun the same command: the run resumes from "
                  "its last checkpoint, and nothing half-written is counted", file=sys.stderr)  # fmt: skip
            return 1
        print(f"error: {type(err).__name__}: {one_line(err)} (--debug or XDLIB_DEBUG=1 shows where)", file=sys.stderr)
        return 1


def disk_full(err: BaseException) -> bool:
    """ENOSPC or EDQUOT, also wrapped (safetensors and torch.save report it in their own exception types)."""
    import errno

    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextmanager
def errors_only(*names: str):
    """The named loggers (the root logger for "") print errors only, inside the block."""
    loggers = [logging.getLogger(n or None) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
