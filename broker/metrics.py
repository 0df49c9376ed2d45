"""Prometheus metrics, computed from Redis at scrape time.

Nothing is counted in the broker process: depth, in flight and oldest age come from the queue
index, counters and histograms from what the state machine's scripts record (``broker.activity``).
So the numbers are right under a server with many processes, and every broker that shares a Redis
reports the same cluster-wide values: scrape one of them, or aggregate with ``max by (queue)``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .activity import Activity, QueueActivity
from .queue import TaskQueue

COUNTER_HELP = {
    "submitted": "Tasks submitted.",
    "succeeded": "Tasks that ended succeeded.",
    "failed": "Tasks that ended failed (attempts spent or a non-retryable error).",
    "redelivered": "Attempts that failed or lost their lease and sent the task back to its queue.",
    "canceled": "Tasks canceled.",
    "expired": "Tasks that waited in their queue past their ttl.",
}
HISTOGRAM_HELP = {
    "queue_wait": ("inferbox_task_queue_wait_seconds",
                   "Seconds a task waited in its queue before a worker took it (per attempt)."),
    "processing": ("inferbox_task_processing_seconds",
                   "Seconds from take to the worker's result or error (per attempt)."),
    "end_to_end": ("inferbox_task_end_to_end_seconds",
                   "Seconds from submit to success."),
}  # fmt: skip


class BrokerCollector(Collector):
    """Every inferbox metric, read fresh from Redis on each scrape."""

    def __init__(self, queue: TaskQueue) -> None:
        self.activity = Activity(queue)

    def collect(self) -> Iterator[Metric]:
        queues = self.activity.queues()
        yield from _queue_gauges(queues)
        yield from _counters(queues)
        yield from _histograms(queues)
        yield GaugeMetricFamily(
            "inferbox_workers_alive",
            "Workers that polled, heartbeated or posted recently, or still hold a lease.",
            value=self.activity.workers_alive(),
        )
        yield GaugeMetricFamily(
            "inferbox_webhook_backlog",
            "Webhook events waiting to be handed to the delivery queue.",
            value=self.activity.webhook_backlog(),
        )


def _queue_gauges(queues: list[QueueActivity]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("inferbox_queue_depth", "Tasks waiting in the queue.",
                              labels=["queue"])  # fmt: skip
    in_flight = GaugeMetricFamily("inferbox_queue_in_flight", "Tasks leased to workers.",
                                  labels=["queue"])  # fmt: skip
    oldest = GaugeMetricFamily(
        "inferbox_queue_oldest_age_seconds",
        "Age of the oldest task waiting in the queue (0 when it is empty).", labels=["queue"],
    )
    for queue in queues:
        stats = queue.stats
        depth.add_metric([stats.name], stats.depth)
        in_flight.add_metric([stats.name], stats.in_flight)
        oldest.add_metric([stats.name], stats.oldest_age_seconds or 0.0)
    yield from (depth, in_flight, oldest)


def _counters(queues: list[QueueActivity]) -> Iterator[Metric]:
    for name, text in COUNTER_HELP.items():
        family = CounterMetricFamily(f"inferbox_tasks_{name}", text, labels=["queue"])
        for queue in queues:
            family.add_metric([queue.stats.name], queue.counters.get(name, 0))
        yield family


def _histograms(queues: list[QueueActivity]) -> Iterator[Metric]:
    for key, (metric, text) in HISTOGRAM_HELP.items():
        family = HistogramMetricFamily(metric, text, labels=["queue"])
        for queue in queues:
            histogram = queue.histograms[key]
            family.add_metric([queue.stats.name], histogram.cumulative(), histogram.sum)
        yield family


def registry_for(queue: TaskQueue) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(queue))
    return registry
