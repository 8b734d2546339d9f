# Two commands: `make demo` and `make test`. Each sets up .venv from the pinned requirements first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEV_STAMP := $(VENV)/.installed-dev

# demo knobs: make demo DURATION=40 TOKENS=200 RATE=50  (DURATION= runs until Ctrl-C)
DURATION ?= 60
TOKENS ?= 200
RATE ?= 50

.PHONY: install demo test faults chaos lint clean evm-node

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(TEST_STAMP): $(STAMP) requirements-test.txt
	$(BIN)/python -m pip install -q -r requirements-test.txt
	touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

demo: install
	$(BIN)/kakarot demo --tokens $(TOKENS) --rate $(RATE) $(if $(DURATION),--duration $(DURATION))

test: $(TEST_STAMP) evm-node
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fleet through real faults (Redis killed, paused, restarted; the database away; workers
# killed): a minute or two each, so a suite of its own (`make chaos` is the same);
# `.ci/run` runs it after `make test`.
faults: $(TEST_STAMP) evm-node
	$(BIN)/python -m pytest -o addopts=-ra tests/faults $(PYTEST_ARGS)

chaos: faults

# Test-only: anvil (a local EVM node) and the Uniswap V2 artifacts, from npm at the exact versions
# of package.json (no lock file: npm writes one without the other platforms' anvil binaries).
# Without npm the EVM tests skip and say why; CI requires them (KAKAROT_TEST_REQUIRE_EVM).
evm-node: node_modules/.installed

node_modules/.installed: package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --no-package-lock --no-audit --no-fund --ignore-scripts --loglevel=error \
			&& touch $@; \
	else echo "npm not found: the EVM source tests will be skipped"; fi

# ruff (lint and format), mypy strict on the package, and the import rules between the stages
lint: $(DEV_STAMP)
	$(BIN)/ruff check kakarot_workers tests bench
	$(BIN)/ruff format --check kakarot_workers tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis node_modules
