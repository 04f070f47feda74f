"""xdlib: XtremeDistil-style task-transfer distillation for transformer encoders (arXiv 2106.04563)."""

__version__ = "0.1.0"


def git_state() -> dict:
    """The checkout's commit and whether tracked files differ from it (None, None outside a checkout). Here, not in
    runs.py, so that `xdlib --version` reads it without importing torch."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"git_sha": sha.stdout.strip() or None, "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def version_line() -> str:
    """`xdlib 0.1.0`, with the git sha (and `+dirty` for uncommitted changes) when xdlib runs from a checkout."""
    from pathlib import Path

    line = f"xdlib {__version__}"
    if not (Path(__file__).resolve().parent.parent / ".git").exists():  # an installed wheel: the version says all
        return line
    state = git_state()
    if not state["git_sha"]:
        return line
    return f"{line} (git {state['git_sha']}{'+dirty' if state['git_dirty'] else ''})"
