# One command each: run the demo, test, lint. `make venv` first (or use your own environment).
PY ?= .venv/bin/python

.PHONY: venv run test lint bench bench-worker bench-sync
venv:
	python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"
run:
	$(PY) -m broker.demo
test:
	$(PY) -m pytest
lint:
	$(PY) -m ruff check . && $(PY) -m mypy
# The one-command benchmark (issue 5): needs `pip install -e ".[bench]"` and Redis on
# 127.0.0.1:6379 (database 12 is flushed); writes benchmarks/RESULTS.md and the README table.
bench:
	$(PY) -m benchmarks.run --write
bench-worker:
	$(PY) benchmarks/worker_batching.py
bench-sync:
	$(PY) benchmarks/sync_predict.py
