# Two entry points: `make demo` runs the whole pipeline on the built-in synthetic dataset,
# `make test` runs lint, types and the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fsar demo

test: $(STAMP)
	$(BIN)/ruff check fsar tests benchmarks
	$(BIN)/mypy fsar
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf fsar-work .pytest_cache .mypy_cache
