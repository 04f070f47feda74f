"""Deployment: ONNX export, prediction from an HF or ONNX folder, and the deployment benchmark (docs/deploy.md).

- `export`: a run's model as an ONNX folder, fp32 or int8 (`xdlib export RUN_DIR [--int8]`);
- `serve`: `serve.load(folder)` predicts with an HF folder or an ONNX folder the same way;
- `deploy`: what ONNX and int8 cost in speed and accuracy (`xdlib deploy`, `make deploy`); its entry
  points are re-exported here (`from xdlib.deploy import run, sweep_runs`).
"""

from __future__ import annotations

from .deploy import SweepFailed, main, measure, run, sweep_runs

__all__ = ["SweepFailed", "main", "measure", "run", "sweep_runs"]
