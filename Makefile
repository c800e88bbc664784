# The book and its tests. Every target creates .venv from requirements.txt when it is missing.
#
#   make book       build the HTML book (_build/html), warnings are errors
#   make test       unit + browser tests, then every notebook re-run under nbval
#   make lab        JupyterLab on the notebooks, widgets live
#   make notebooks  clean restart-and-run-all of book/*.ipynb in place (outputs + widget state);
#                   one notebook: make notebooks NB=book/01_gaussian_pdf.ipynb
#   make clean      remove _build

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
	@sed -n '1,9p' Makefile | sed 's/^# \{0,1\}//'

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
