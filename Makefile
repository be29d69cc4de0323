# icswatch: the two commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean pcaps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Replay the demo captures in pcaps/ (alerts into SQLite under var/, summary on screen).
demo: $(STAMP)
	$(BIN)/icswatch replay pcaps/

# Install and run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest

# Regenerate the crafted captures in pcaps/ from the project's own scapy scripts.
pcaps: $(STAMP)
	$(BIN)/python tools/make_pcaps.py

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) var .pytest_cache
