# icswatch: the two commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test audit bench bench-protocols bench-hostile soak clean pcaps fuzz fuzz-corpus fuzz-summary

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

# Audit the installed dependencies for known vulnerabilities (pip-audit; tools/audit_deps.py): exit 1 on
# one; an unreachable vulnerability service is one WARNING line, not a failure. CI runs it after the tests.
audit: $(STAMP)
	$(BIN)/python tools/audit_deps.py

# Regenerate the crafted captures in pcaps/ from the project's own scapy scripts.
pcaps: $(STAMP)
	$(BIN)/python tools/make_pcaps.py

bench: $(STAMP)
	$(BIN)/python bench/run_bench.py

# Per-protocol throughput against tshark (issue 4): one synthetic capture per protocol, PDU counts checked.
bench-protocols: $(STAMP)
	$(BIN)/python bench/protocol_bench.py --json bench/out/protocols.json

# The hostile-traffic suite at full size (docs/hostile-traffic.md): a million SYN flows, floods that
# never complete, lying lengths, absurd timestamps; captures are generated into bench/out/hostile/.
bench-hostile: $(STAMP)
	nice -n 10 $(BIN)/python bench/hostile.py --json bench/out/hostile.json

# Coverage-guided fuzzing (atheris; docs/fuzzing.md): every target for FUZZ_SECONDS, one after the
# other, or only FUZZ_TARGET. Seeds come from ../shared/pcaps; logs, corpus and crashes go to var/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_TARGET ?=
fuzz: $(STAMP)
	$(BIN)/python -m fuzz.campaign --seconds $(FUZZ_SECONDS) $(if $(FUZZ_TARGET),--target $(FUZZ_TARGET))

fuzz-corpus: $(STAMP)
	$(BIN)/python -m fuzz.corpus

fuzz-summary:
	$(BIN)/python -m fuzz.summary

# Soak: one sensor replaying a capture mix in a loop with every detector and output on (docs/soak.md).
SOAK_SECONDS ?= 3600
soak: $(STAMP)
	nice -n 10 $(BIN)/python bench/soak.py --duration $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) var .pytest_cache
