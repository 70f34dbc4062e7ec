# The two commands of the README's quick start. Each builds .venv if it is
# missing, installs what it needs, then acts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers: one per core keeps the 2-core CI machine busy.
TEST_WORKERS ?= auto

.PHONY: train test test-interop install install-dev install-torch clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# The torch extra (torch, torchvision, timm: about 4.2 GB) is only for weight
# import and the PyTorch comparison; tests/interop skips without it.
$(VENV)/.installed-torch: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,torch]"
	touch $@ $(VENV)/.installed $(VENV)/.installed-dev

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

train: install
	$(BIN)/zoo train

test: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -q

test-interop: $(VENV)/.installed-torch
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -q tests/interop

clean:
	rm -rf $(VENV) workdirs .pytest_cache
