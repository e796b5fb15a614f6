# The two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/kit demo

test: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest

# speed ratios side by side on this machine (under 15 min on 2 CPU cores); writes bench/results/bench.md
bench: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python bench/run.py

clean:
	rm -rf runs submissions/*.csv submissions/*.json data/demo data/_leaderboard
