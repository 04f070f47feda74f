"""The checks of every command-line option that takes a value, in one table shared by every command (`xdlib ...`
and `xdlib deploy`): a bad value is refused by argparse in one line that names the option, the value and
what is allowed, before anything is imported or run. Config fields (`-p key=value`, params files) have their own
checks in config.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable


class Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake told in one line (`error: …`, exit status 2) like every other."""

    def error(self, message: str):
        allowed = "" if "allowed:" in message else f"; allowed: see {self.prog} --help"  # an option's check says it
        self.exit(2, f"error: {self.prog}: {message}{allowed}\n")


def _count(minimum: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a whole number >= {minimum}")
        return value

    return check


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: sizes >= 1 separated by commas, "
                                         "like 10000,100000")  # fmt: skip
    return sizes


def _choice(*allowed: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: {', '.join(allowed)}")
        return text

    return check


def _device(text: str) -> str:
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: auto, cpu, cuda, cuda:N or mps")
    return text


# option -> its check; every command declares its valued options through `add` below
CHECKS: dict[str, Callable[[str], object]] = {
    "--nproc-per-node": _count(1),  # run: ranks it starts itself
    "--workers": _count(1),  # sweep, study: parallel jobs of the local executor
    "--gpus-per-cell": _count(1),  # sweep, study
    "--executor": _choice("inline", "direct", "local", "slurm"),  # sweep, study, deploy (its --params sweep)
    "--size": _choice("smoke", "quick", "medium", "full"),  # bench
    "--speed-rows": _count(1),  # bench
    "--scale-rows": _sizes,  # bench
    "--device": _device,  # bench
    "--rows": _count(1),  # deploy: test rows
    "--threads": _count(1),  # deploy: inference threads
}


def add(parser: argparse.ArgumentParser, flag: str, **kwargs) -> argparse.Action:
    """`parser.add_argument(flag, type=<its check in CHECKS>, ...)`: an option with a value is always checked."""
    return parser.add_argument(flag, type=CHECKS[flag], **kwargs)
