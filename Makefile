# The two set-up commands: `make run [PORT=8765]` and `make test`. Both need only python3
# and make (`make test` installs the rest it needs: scripts/test-deps.sh).
PY ?= python3
PORT ?= 8765
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean cluster

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/matchreplay demo --port $(PORT)

# A local cluster: a throwaway PostgreSQL, 3 nodes and bot matches (docs/operations.md).
cluster: $(STAMP)
	$(BIN)/matchreplay cluster

# scripts/test-deps.sh installs what the tests need beyond python3 and make (chromium,
# postgresql); tests/conftest.py starts a throwaway PostgreSQL for the run.
test: $(STAMP)
	scripts/test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) data .pytest_cache
