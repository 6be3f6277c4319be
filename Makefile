# The entry points. Each target sets itself up from a fresh clone: no manual step, no root,
# no Docker. `make demo` and `make test` are the two commands the README promises.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NODE_CLIENT := tests/e2e/node/node_modules/@nangohq/node

.PHONY: demo test test-unit bench bench-scale chaos chaos-ci lint format clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "hooksync needs Python 3.11 or newer (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

# The official Nango Node client, used by the end-to-end contract tests (skipped without npm
# locally; CI installs it).
$(NODE_CLIENT): tests/e2e/node/package.json
	@if command -v npm >/dev/null; then cd tests/e2e/node && npm install --no-audit --no-fund --silent; \
	else echo "npm not found: the Nango Node client tests will be skipped"; fi

demo: $(STAMP)
	$(BIN)/python -m demo.run

test: $(STAMP) $(NODE_CLIENT)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# The bench's extra (the dlt peer) on top of the dev install, its stamp keyed like STAMP. If it
# cannot be installed the bench still runs and says the peer was skipped; no stamp, so the
# next `make bench` tries again.
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

$(BENCH_STAMP): $(STAMP)
	@if $(BIN)/python -m pip install --quiet -e '.[dev,bench]'; then \
		rm -f $(VENV)/.bench-installed-* && touch $@; \
	else echo "could not install the bench extra (dlt): the dlt peer will be skipped"; fi

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run

# Scale-out (issue 9): web x2, beat, worker x1/x2/x4 as separate machines on one Postgres and
# one Redis; runs/s and the ratio vs one worker, per-connection overlaps (bench/RESULTS.md).
bench-scale: $(BENCH_STAMP)
	$(BIN)/python -m bench.scale

# Fault injection (issue 9): kill -9 of workers, web and the embedded Redis, the database
# down, app and external API outages, under a steady signed webhook load; prints the table
# of checks (nothing lost, nothing twice, recovery times) and exits 1 if one fails. Needs
# Postgres binaries (initdb, pg_ctl). chaos-ci: each fault once, a few minutes.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos

chaos-ci: $(STAMP)
	HOOKSYNC_CHAOS_PROFILE=ci $(BIN)/python -m bench.chaos

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache tests/e2e/node/node_modules
