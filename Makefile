# The book and its tests. Every target creates .venv from requirements.txt when it is missing.
#
#   make book       build the HTML book (_build/html), warnings are errors
#   make test       unit + browser tests, then every notebook re-run under nbval
#   make lab        JupyterLab on the notebooks, widgets live
#   make notebooks  clean restart-and-run-all of book/*.ipynb in place (outputs + widget state);
#                   one notebook: make notebooks NB=book/01_gaussian_pdf.ipynb
#   make clean      remove _build
#   make bench-peers  EM table vs pomegranate + torchgmm in their own venv .venv-peers (not make test)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NB ?=
SANITIZE := nbval_sanitize.cfg
# Kernels started by nbval/JupyterLab take the venv's python; hash seeds are fixed.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: help venv book book-fresh test unit nbval chromium lab notebooks clean

help:
	@sed -n '1,10p' Makefile | sed 's/^# \{0,1\}//'

# The environment: pinned packages, then gmmlib itself in editable mode (the notebooks'
# kernels start in book/, so gmmlib must be installed to be importable there).
$(STAMP): requirements.txt pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  echo "creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# For the tests: a full rebuild (an incremental build does not repeat the warnings of pages
# it skips, and a page removed from the toc would linger in _build/html).
book-fresh: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . -W -n --keep-going --all

# The browser tests drive Debian's chromium through playwright (never `playwright install`).
# Installed here when missing, as root with apt; otherwise the tests skip and say why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the browser tests (apt-get, about 500 MB)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  if apt-get update -q && apt-get install -y -q chromium; then :; else \
	    echo "WARNING: apt-get could not install chromium: the browser tests will be skipped"; fi; \
	else \
	  echo "WARNING: no chromium, and installing it needs root and apt-get:" \
	       "the browser tests will be skipped (install chromium, then run make test again)"; \
	fi

unit: $(STAMP)
	$(BIN)/python -m pytest tests/ -q -rs

nbval: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with $(SANITIZE) book/ -q -rs --durations=0

test: $(STAMP) chromium
	$(MAKE) --no-print-directory book-fresh
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory nbval

lab: $(STAMP)
	$(BIN)/jupyter lab book/ $(if $(filter 0,$(shell id -u)),--allow-root)

notebooks: $(STAMP)
	$(BIN)/python tools/execute_notebooks.py $(NB)

clean:
	rm -rf _build

# The peers' environment for `benchmarks/bench_em.py --peers` (pomegranate, torchgmm): a venv of
# its own, built here and by nothing else (`make test` never needs it). torch is installed first
# (the local CPU wheel) and stays pinned: the peers' pins are passed as constraints too, so no
# dependency can swap in a CUDA build; the checks after the installs would stop here if one did.
# Extra arguments for the script: make bench-peers PEERS_ARGS="--sizes 1e5,16,16 --types full"
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_REQ := benchmarks/requirements-peers.txt
PEERS_ARGS ?=
CPU_TORCH := import sys, torch; sys.exit(f"torch {torch.__version__} is a CUDA build" if torch.version.cuda else 0)

$(PEERS_STAMP): requirements.txt $(PEERS_REQ) pyproject.toml
	@if [ ! -x $(PEERS_VENV)/bin/python ]; then \
	  echo "creating $(PEERS_VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(PEERS_VENV); \
	fi
	$(PEERS_VENV)/bin/python -m pip install torch==2.13.0
	$(PEERS_VENV)/bin/python -c '$(CPU_TORCH)'
	$(PEERS_VENV)/bin/python -m pip install -c $(PEERS_REQ) -r requirements.txt -r $(PEERS_REQ)
	$(PEERS_VENV)/bin/python -m pip install --no-deps --no-build-isolation -e .
	$(PEERS_VENV)/bin/python -m pip check
	$(PEERS_VENV)/bin/python -c '$(CPU_TORCH)'
	touch $@

.PHONY: bench-peers
bench-peers: $(PEERS_STAMP)
	$(PEERS_VENV)/bin/python benchmarks/bench_em.py --peers $(PEERS_ARGS)
