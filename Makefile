# mailvet: `make run` starts the service, `make test` runs the whole suite.
# Both create .venv and install what they need, system packages included.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEV_KEY := .mailvet-dev-key

.PHONY: run test lint typecheck pytest system-deps bench clean

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

bench: $(STAMP)
	$(PY) bench/offline.py
	$(PY) bench/single.py
	$(PY) bench/api.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
