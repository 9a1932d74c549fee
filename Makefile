# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs mammoflow, runs the whole workflow on the built-in phantom data
#   make test   creates .venv, installs mammoflow with its test tools, runs the test suite
# The venv is reused while pyproject.toml is unchanged. VENV=/somewhere/else to keep one elsewhere.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: demo test lint bench clean
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/snakemake --cores $(CORES) --configfile presets/demo.yaml

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: $(VENV)/.installed
	$(BIN)/python bench/decode.py

clean:
	rm -rf results logs benchmarks .snakemake
