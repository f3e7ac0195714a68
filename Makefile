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

# Soak (bench/soak.py): capacity measured for 20 s, then SOAK_SECONDS (600) of mixed
# two-way traffic at 80 % of it; flat memory, no error responses; JSON lines, a summary.
SOAK_SECONDS ?= 600
soak: $(STAMP)
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m bench.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
