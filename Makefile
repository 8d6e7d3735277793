# Each target sets itself up: a virtual environment in .venv with the project installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: drill test test-slow lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "broadcaster needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,postgresql]'
	@touch $(STAMP)

drill: $(STAMP)
	$(BIN)/broadcaster drill

# Both run on SQLite, or on PostgreSQL with BROADCASTER_TEST_STATE=postgresql; the PostgreSQL
# tests get a throwaway server when PostgreSQL is installed (scripts/with-postgres).
# axe-core (the pages' accessibility checks) comes from the npm registry when npm is there;
# without it those tests skip and say why.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: the accessibility tests will skip"; fi

test: $(STAMP) node_modules/.installed
	$(BIN)/ruff check .
	scripts/with-postgres $(BIN)/pytest

test-slow: $(STAMP)
	scripts/with-postgres $(BIN)/pytest -m slow

bench: $(STAMP)
	scripts/system-packages postfix postgresql
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/email_fanout.py
	$(BIN)/python bench/email_relay_rate.py
	$(BIN)/python bench/site_publish.py
	$(BIN)/python bench/hooks.py
	$(BIN)/python bench/workers.py

clean:
	rm -rf $(VENV) build *.egg-info drill-site
