# The two commands of the README's quick start. Each builds .venv if it is
# missing, installs what it needs, then acts.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers: one per core keeps the 2-core CI machine busy.
TEST_WORKERS ?= auto

.PHONY: train test test-interop install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The tests need every extra: torch, torchvision and timm for the weight-import
# parity tests, TensorFlow for the SavedModel export test (about 5.6 GB more
# than `make train`'s install; see the README's Tests section).
# --no-compile: byte-compiling every module of torch and TensorFlow costs about
# a minute, and the tests import a small part of them.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev,torch,tf]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

train: install
	$(BIN)/zoo train

test: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -q

# Only the weight import / export tests (they are part of `make test` too).
test-interop: install-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -q tests/interop

clean:
	rm -rf $(VENV) workdirs .pytest_cache
