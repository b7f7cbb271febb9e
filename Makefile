# Two commands do all set-up on a fresh machine (Python 3.11+, pip, a C++ compiler, cmake):
#   make demo   the main path end to end, offline, on the embedded synthetic model
#   make test   ruff + pytest (helpers) + nbval (every notebook)
# Both create/reuse .venv, install the project, and build llama.cpp once into the user
# cache (~/.cache/llamacpp-course, or $LLAMACPP_COURSE_CACHE), keyed by commit and flags.

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv llama demo test lint clean

all: demo

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

llama: $(STAMP)
	$(BIN)/python -m helpers build

demo: llama
	$(BIN)/python -m helpers demo

lint: $(STAMP)
	$(BIN)/ruff check helpers tests

test: llama lint
	$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg \
		tests notebooks $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
