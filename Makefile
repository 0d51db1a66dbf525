# The two commands a newcomer runs (see README): `make demo` and `make test`.
# Each creates .venv with the system python3 and installs what it needs, pinned by constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
TEST_EXTRAS := dev,rl,ray,rlhf

.PHONY: demo test test-slow bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e ".[$(TEST_EXTRAS)]"
	touch $@

## demo: the main job, a gradient-quality comparison on built-in defaults (about a minute)
demo: $(VENV)/.core
	$(BIN)/stochgrad compare --out runs/demo $$(test -f runs/demo/config.json && echo --resume)

## test: the test suite (slow tests are skipped; `make test-slow` runs them)
test: $(VENV)/.test
	$(BIN)/python -m pytest

test-slow: $(VENV)/.test
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
