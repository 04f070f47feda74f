# Two commands do everything: `make study` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
XDLIB := $(VENV)/bin/xdlib
PARAMS ?= params/default.yaml
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# why: with PYTHONDONTWRITEBYTECODE set, every process (each notebook kernel, each test subprocess) recompiles
# transformers and torch from source: 11 s per `import xdlib.stages` on 2 cores (18 s -> 7 s once cached)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: study beyond scaling deploy report notebooks test test-fast lint install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e ".[dev,deploy,tensorboard,mlflow]"  # no .pyc for all of torch up front: 15 s less setup
	touch $@

install: $(VENV)/.installed

study: $(VENV)/.installed  ## run the embedded default study (offline, CPU): sweep, then tables, figures and results/report.html
	$(XDLIB) study $(PARAMS) --html  # each run through its notebook (papermill), kept in its run folder

beyond: $(VENV)/.installed  ## the beyond-paper arms (general stage, multi-source teacher): params/beyond.yaml
	$(XDLIB) study params/beyond.yaml  # its own run store: tables in results/beyond/

scaling: $(VENV)/.installed  ## the scaling study: two recipes over ~1.2k to ~32k transfer rows, 3 seeds (22 min after make study)
	$(XDLIB) study params/scaling.yaml  # reuses the default study's runs where the ids match

deploy: $(VENV)/.installed  ## the study's models as ONNX fp32 and int8: accuracy and speed (notebooks/export.ipynb)
	$(XDLIB) deploy --params params/deploy.yaml  # fine-tunes each model once with save_model (reusing the study's runs)

report: $(VENV)/.installed  ## rebuild results/tables and results/figures from the run store
	$(XDLIB) report --html

notebooks: $(VENV)/.installed  ## after changing a config field or a notebooks/*.py: re-pair the .ipynb files
	$(PY) -m xdlib.notebook

test: $(VENV)/.installed  ## every test tier that runs on a CPU
	$(PY) -m pytest -q --durations=12

test-fast: $(VENV)/.installed  ## the inner loop (under 2 min on 2 cores): every test but the slow and notebook ones
	$(PY) -m pytest -q -m "not slow and not notebooks"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check xdlib tests notebooks
	$(VENV)/bin/ruff format --check xdlib tests

clean:
	rm -rf results/runs results/cache
