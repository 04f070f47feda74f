"""notebooks/export.ipynb at smoke size through papermill (about 20 s on 2 cores), in FOLDER: a sweep with save_model
over a tiny BERT (its teacher on toy-sentiment, a distilled student fine-tuned on toy-regression), then both models
measured as PyTorch fp32, ONNX fp32 and int8; the tables in FOLDER/out. conftest.py runs it in a child process
beside the other tests: `python tests/export_smoke.py FOLDER`; test_export.py reads it."""

import sys
from pathlib import Path

import papermill
import yaml
from conftest import make_tiny_encoder, smoke_params

from xdlib.notebook import NOTEBOOKS

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    values = smoke_params(folder, make_tiny_encoder(folder / "encoder")) | {"save_model": True}
    study = folder / "deploy.yaml"
    grid = {"target_task": ["toy-regression"], "student": ["distilled"]}
    study.write_text(yaml.safe_dump({"name": "d", "version": 1, **values, "grid": grid}))
    papermill.execute_notebook(str(NOTEBOOKS / "export.ipynb"), str(folder / "export.ipynb"),
                               cwd=str(NOTEBOOKS.parent),
                               parameters={"params": str(study), "executor": "direct", "out_dir": str(folder / "out")},
                               progress_bar=False)  # fmt: skip
