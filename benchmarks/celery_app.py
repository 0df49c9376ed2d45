"""The Celery baseline: Redis broker and Redis result backend, one no-op task.

Started as ``celery -A benchmarks.celery_app worker --pool prefork --concurrency 2``; the
Redis URL comes from ``INFERBOX_BENCH_REDIS_URL`` (``benchmarks.config.REDIS_URL``).
"""

from __future__ import annotations

from celery import Celery

from benchmarks.config import REDIS_URL
from benchmarks.handlers import noop


def make_app() -> Celery:
    """A Celery app on the benchmark Redis (one per client thread: result consumers are not
    shared between threads)."""
    app = Celery("inferbox_bench", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    worker_prefetch_multiplier=4, task_acks_late=False,
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                    result_expires=3600)  # fmt: skip
    app.task(name="bench.noop")(noop)
    return app


app = make_app()
