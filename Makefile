# One command each: run the demo, test, lint. `make venv` first (or use your own environment).
PY ?= .venv/bin/python

.PHONY: venv run test lint bench
venv:
	python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"
run:
	$(PY) -m broker.demo
test:
	$(PY) -m pytest
lint:
	$(PY) -m ruff check . && $(PY) -m mypy
bench:
	$(PY) benchmarks/worker_batching.py
