# The two commands of the README's quick start. Each builds .venv if it is
# missing, installs what it needs, then acts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers: one per core keeps the 2-core CI machine busy.
TEST_WORKERS ?= auto

.PHONY: train test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

train: install
	$(BIN)/zoo train

test: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -q

clean:
	rm -rf $(VENV) workdirs .pytest_cache
