# Two commands: `make demo` and `make test`. Each sets up .venv from the pinned requirements first.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# demo knobs: make demo DURATION=40 TOKENS=200 RATE=50  (DURATION= runs until Ctrl-C)
DURATION ?= 60
TOKENS ?= 200
RATE ?= 50

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

demo: install
	$(BIN)/kakarot demo --tokens $(TOKENS) --rate $(RATE) $(if $(DURATION),--duration $(DURATION))

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/ruff check kakarot_workers tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
