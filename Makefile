# Two commands a newcomer needs:  `make book`  and  `make test`.
# PROFILE=smoke|default|paper picks the parameter profile (params/<profile>.yaml).

PROFILE ?= default
PYTHON ?= python3
VENV ?= .venv
# The CPU install pins the CPU torch wheel; on a GPU machine use CONSTRAINTS= EXTRAS=gpu.
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= cpu

PY := $(VENV)/bin/python
STAMP := $(VENV)/.esae-installed
# The checkout's own package comes first even when the venv is shared between checkouts.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export MPLBACKEND ?= Agg

.PHONY: all install browser book chapter test clean clean-cache help

all: install

help:
	@echo "make book [PROFILE=smoke|default|paper]   execute every chapter and build the HTML book"
	@echo "make chapter N=04 [PROFILE=...]            execute one chapter into book/chapters/"
	@echo "make test                                  run the test suite"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

book: install
	$(PY) -m esae.book build --profile $(PROFILE)

chapter: install
	@test -n "$(N)" || { echo "usage: make chapter N=04 [PROFILE=...]"; exit 2; }
	$(PY) -m esae.book run $(N) --profile $(PROFILE)

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
	rm -rf _build book/chapters/*.ipynb

clean-cache:
	rm -rf .cache/esae
