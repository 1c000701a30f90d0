# mailvet: `make run` starts the service, `make test` runs the whole suite.
# Both create .venv and install what they need, system packages included.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEV_KEY := .mailvet-dev-key

.PHONY: run test lint typecheck pytest system-deps bench bench-batch clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mailvet serve --dev-key-file $(DEV_KEY)

system-deps:
	bash scripts/ensure_postgres.sh
	bash scripts/ensure_chromium.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)  # strict over src/mailvet, tests and bench: pyproject.toml [tool.mypy]
	$(VENV)/bin/mypy

pytest: $(STAMP) system-deps
	bash scripts/run_pytest.sh $(VENV)

test: lint typecheck pytest

# The benchmarks of docs/BENCHMARKS.md that take minutes, not tens of them (6 to 7 in all
# on 2 shared vCPUs). bench/single.py binds port 25 on loopback (root); bench/api.py loads
# with Debian's wrk when installed, else with its own client.
bench: $(STAMP)
	$(PY) bench/offline.py
	$(PY) bench/cli_offline.py
	$(PY) bench/single.py
	$(PY) bench/api.py
	$(PY) bench/batch.py --quick

# The batch engine's full run, the figures of docs/BENCHMARKS.md: 100,000 addresses, then
# py3-validate-email on a 1,000-address sample (about 8 minutes).
bench-batch: $(STAMP)
	$(PY) bench/batch.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
