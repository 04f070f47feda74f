"""notebooks/benchmark.ipynb at smoke size through papermill (about 30 s on 2 cores), in FOLDER: bench.ipynb and the
raw JSON. conftest.py runs it in a child process beside the other tests: `python tests/benchmark_smoke.py FOLDER`;
test_notebooks.py reads it. Its timings are not asserted, only their consistency."""

import sys
from pathlib import Path

import papermill

from xdlib.notebook import NOTEBOOKS

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    papermill.execute_notebook(str(NOTEBOOKS / "benchmark.ipynb"), str(folder / "bench.ipynb"),
                               cwd=str(NOTEBOOKS.parent),
                               parameters={"size": "smoke", "device": "cpu", "out_dir": str(folder)},
                               progress_bar=False)  # fmt: skip
