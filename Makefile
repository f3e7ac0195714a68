# lienthong-hub — the two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install clean tokens bench bench-quick soak

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@echo "== ready-made tokens (see README) =="
	@$(BIN)/lienthong token --examples
	@echo
	$(BIN)/lienthong serve

tokens: $(STAMP)
	@$(BIN)/lienthong token --examples

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Benchmarks (bench/README.md): the hub as a child process, load from another
# process on 127.0.0.1; one JSON line per measurement, then a table.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--phases accept --json out.jsonl".
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

# Soak, in two parts.  bench/soak.py: capacity measured for 20 s, then SOAK_SECONDS (600)
# of mixed two-way traffic at 80 % of it; flat memory, no error responses; JSON lines, a
# summary.  Then the SIGKILL fault test at length: SOAK_KILLS (20) kills at random
# instants, SOAK_KILL_EVERY (3 to 8) seconds of traffic before each, traffic going on
# until SOAK_DOCUMENTS (5000) documents were accepted; nothing acknowledged lost, nothing
# twice in a mailbox, the audit chain verifies.
SOAK_SECONDS ?= 600
SOAK_KILLS ?= 20
SOAK_KILL_EVERY ?= 3,8
SOAK_DOCUMENTS ?= 5000
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m bench.soak $(SOAK_ARGS)
	FAULT_KILLS=$(SOAK_KILLS) FAULT_KILL_EVERY=$(SOAK_KILL_EVERY) \
	FAULT_MIN_DOCUMENTS=$(SOAK_DOCUMENTS) \
	$(BIN)/python -m pytest -q -s tests/faults/test_sigkill_traffic.py

clean:
	rm -rf $(VENV) build dist *.egg-info
