"""xdlib: XtremeDistil-style task-transfer distillation for transformer encoders (arXiv 2106.04563)."""

__version__ = "0.1.0"


def version_line() -> str:
    """`xdlib 0.1.0`, with the git sha (and `+dirty` for uncommitted changes) when xdlib runs from a checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    line = f"xdlib {__version__}"
    if not (root / ".git").exists():  # an installed wheel: its version is the whole story
        return line
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return line
    if sha.returncode != 0:
        return line
    return f"{line} (git {sha.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''})"
