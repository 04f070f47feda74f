"""The command and the package: `xdlib --version`, and `python -m build`'s wheel and sdist, each installed into a
fresh venv where `xdlib tasks` runs; the wheel holds the `xdlib` package with every subpackage, and no tests or
results."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import xdlib

ROOT = Path(__file__).resolve().parents[1]


def _xdlib_script() -> Path:
    return Path(sys.executable).parent / "xdlib"


def test_version_names_the_package_and_the_checkouts_commit():
    done = subprocess.run([_xdlib_script(), "--version"], capture_output=True, text=True, timeout=60)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert done.returncode == 0 and done.stdout.startswith(f"xdlib {xdlib.__version__} (git {sha}"), done.stdout
    assert done.stdout.count("\n") == 1 and not done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """`python -m build` (sdist, then the wheel from the sdist) of this checkout; setuptools from this venv."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.mark.slow
def test_the_wheel_holds_the_package_and_every_subpackage_and_nothing_else(built):
    names = zipfile.ZipFile(built["wheel"]).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"xdlib", f"xdlib-{xdlib.__version__}.dist-info"}, tops  # no tests/, results/, notebooks/
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "xdlib").rglob("*.py")}
    assert source and source <= set(names), sorted(source - set(names))  # a subpackage left out of the list shows
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "xdlib = xdlib.__main__:main" in zipfile.ZipFile(built["wheel"]).read(entry).decode()


def _fresh_venv(where: Path) -> Path:
    """A new venv that sees this venv's dependencies (torch, transformers, ...) through a .pth file, not xdlib."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(where), "platbase": str(where)}))
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return where / "bin" / "python"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_wheel_and_the_sdist_install_into_a_fresh_venv_and_run(kind, built, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
               "--no-build-isolation", str(built[kind])]  # fmt: skip
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([python, "-c", "import xdlib; print(xdlib.__file__)"], capture_output=True, text=True,
                           cwd=tmp_path)  # fmt: skip
    assert where.stdout.startswith(str(tmp_path / "venv")), where  # the installed package, not this checkout
    tasks = subprocess.run([tmp_path / "venv" / "bin" / "xdlib", "tasks"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)  # fmt: skip
    assert tasks.returncode == 0 and "rt-polarity" in tasks.stdout, tasks.stderr[-3000:]
    version = subprocess.run([tmp_path / "venv" / "bin" / "xdlib", "--version"], capture_output=True, text=True)
    assert version.stdout == f"xdlib {xdlib.__version__}\n"  # no checkout around it: no git sha
