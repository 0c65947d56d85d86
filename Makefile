# CryptoJ Trader — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cryptoj demo --duration $${DEMO_SECONDS:-60}

test: $(STAMP)
	$(PY) -m pytest --cov=cryptoj --cov-branch --cov-report=term --cov-report=json:coverage.json \
		--cov-report=html:htmlcov --cov-fail-under=90 $(PYTEST_ARGS)
	$(PY) scripts/check_coverage.py coverage.json

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(PY) scripts/build_docs.py

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) htmlcov coverage.json .coverage build site docs/api .pytest_cache .mypy_cache .ruff_cache
