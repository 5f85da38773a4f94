# Two commands a newcomer needs:  `make book`  and  `make test`.
# PROFILE=smoke|default|paper picks the parameter profile (params/<profile>.yaml).

PROFILE ?= default
PYTHON ?= python3
VENV ?= .venv
# The CPU install pins the CPU torch wheel; on a GPU machine use CONSTRAINTS= EXTRAS=gpu.
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= cpu
# PyTorch's CPU wheels (PyPI's Linux torch is the CUDA build). Asked only when it answers within
# seconds (constraints/torch_index.py); a machine that reaches only PyPI installs from there.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

PY := $(VENV)/bin/python
STAMP := $(VENV)/.esae-installed
LAB_STAMP := $(VENV)/.esae-lab-installed
PIP_INSTALL = $(PY) -m pip install --quiet --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) \
	$$($(PY) constraints/torch_index.py $(EXTRAS) $(TORCH_INDEX))
# The checkout's own package comes first even when the venv is shared between checkouts.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export MPLBACKEND ?= Agg

.PHONY: all install browser book chapter params lab test clean clean-cache help

all: install

help:
	@echo "make book [PROFILE=smoke|default|paper]   execute every chapter and build the HTML book"
	@echo "make chapter N=04 [PROFILE=...]            execute one chapter into book/chapters/"
	@echo "make params N=04 [PROFILE=...]             print one chapter's parameters (YAML for papermill -f)"
	@echo "make lab                                   JupyterLab on the chapters (paired .py/.ipynb)"
	@echo "make test                                  run the test suite"

$(PY):
	$(PYTHON) -m venv $(VENV)

# The library with the book's and the tests' extras (pyproject.toml), and xgboost's cpu or gpu build.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP_INSTALL) -e ".[$(EXTRAS),book,test]"
	@$(PY) constraints/torch_index.py --check $(EXTRAS)
	@touch $@

install: $(STAMP)

book: install
	@$(PY) -m esae.book build --profile $(PROFILE)

chapter: install
	@test -n "$(N)" || { echo "usage: make chapter N=04 [PROFILE=...]"; exit 2; }
	@$(PY) -m esae.book run $(N) --profile $(PROFILE)

params: install
	@test -n "$(N)" || { echo "usage: make params N=04 [PROFILE=...]"; exit 2; }
	@$(PY) -m esae.book params $(N) --profile $(PROFILE)

$(LAB_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[$(EXTRAS),book,test,lab]"
	@touch $@

# jupytext.toml pairs notebooks/<chapter>.py with notebooks/<chapter>.ipynb (never committed).
lab: $(LAB_STAMP)
	$(PY) -m jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --ServerApp.root_dir=$(CURDIR) notebooks/

# The browser test needs Debian's chromium; install it where we can (root with apt-get).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium not installed: the browser test will be skipped (apt-get install chromium)"; fi; }

test: install browser
	$(PY) -m pytest

clean:
	rm -rf _build book/chapters/*.ipynb book/chapters/failed

clean-cache:
	rm -rf .cache/esae
