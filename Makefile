# Two commands do everything: `make study` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PARAMS ?= params/default.yaml
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: study test test-fast lint install clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

study: $(VENV)/.installed  ## run the embedded default study (offline, CPU) and print its table
	$(PY) -m xdlib study $(PARAMS)

test: $(VENV)/.installed  ## every test tier that runs on a CPU
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not notebooks"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check xdlib tests
	$(VENV)/bin/ruff format --check xdlib tests

clean:
	rm -rf results/runs results/cache
