# The two commands: `make demo` and `make test`. Both create .venv and install what they need:
# demo kit alone (no extras), test kit with the test extra (pytest, Ray); demo then test installs the extra once.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.created
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast bench install clean

# setuptools>=77 in the venv: `kit package` builds kit's wheel with it (--no-build-isolation)
$(VENV_STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77'
	touch $(VENV_STAMP)

# an older venv may hold kit under its old distribution name, `kit`: removed first
$(STAMP): pyproject.toml $(VENV_STAMP)
	$(BIN)/pip uninstall -q -y kit 2>/dev/null || true
	$(BIN)/pip install -q -e .
	touch $(STAMP)

# kit with the test extra is kit installed too
$(TEST_STAMP): pyproject.toml $(VENV_STAMP)
	$(BIN)/pip uninstall -q -y kit 2>/dev/null || true
	$(BIN)/pip install -q -e '.[test]'
	touch $(TEST_STAMP) $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/kit demo

test: $(TEST_STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest

# the inner loop: everything but the tests marked slow (notebook runs, kills, fresh venvs); CI runs `make test`
test-fast: $(TEST_STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -m "not slow"

# speed ratios side by side on this machine (under 15 min on 2 CPU cores); writes bench/results/bench.md
bench: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python bench/run.py

clean:
	rm -rf runs submissions/*.csv submissions/*.json data/demo data/_leaderboard
