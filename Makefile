# riversync: `make demo` runs the demo, `make test` runs the whole suite and builds the docs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test soak lint docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/riversync demo

test: $(STAMP)
	$(BIN)/ruff check .
	HYPOTHESIS_PROFILE=fast $(BIN)/python -m pytest -n 2 -q
	$(BIN)/mkdocs build --strict --quiet --site-dir $(VENV)/site

soak: $(STAMP)
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -n 2 -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir $(VENV)/site

bench: $(STAMP)
	$(BIN)/python -m pytest bench -q --benchmark-only

clean:
	rm -rf $(VENV) build dist *.egg-info site
