"""xdlib: XtremeDistil-style task-transfer distillation for transformer encoders (arXiv 2106.04563)."""

__version__ = "0.1.0"
