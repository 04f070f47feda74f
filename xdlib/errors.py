"""The user's mistakes, told in one line.

Every error a user can cause (a bad config value, a malformed data file, a missing model or package) derives from
`UserError`. The command line prints it as `error: …` with exit status 2; Jupyter and papermill show the same one
line instead of a traceback (IPython's `_render_traceback_` hook), and papermill raises it as the notebook's one
exception. A traceback is for our own bugs (and for --debug / XDLIB_DEBUG=1).
"""

from __future__ import annotations

import os


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
