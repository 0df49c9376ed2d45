"""Section 3: worker utilisation with a 20 ms batch handler (``benchmarks/worker_batching.py``)."""

from __future__ import annotations

import math

from benchmarks import worker_batching
from benchmarks.config import BATCHING_THREADS, REDIS_DB, REDIS_URL, Sizes
from benchmarks.report import Check, Section, fmt, ratio


def utilisation_section(sizes: Sizes) -> Section:
    rows = worker_batching.run_all(REDIS_URL, "memory", sizes.batching_tasks)
    rate = {(batch, pipeline): tasks_per_s for batch, pipeline, tasks_per_s, _ in rows}
    busy = {(batch, pipeline): fraction for batch, pipeline, _, fraction in rows}
    baseline = rate.get((1, True), math.nan)
    section = Section("utilisation", "3. Worker utilisation, 20 ms batch handler",
                      ["batch", "pipelining", "tasks/s", "x batch 1 (pipelined)",
                       "model busy"])  # fmt: skip
    for batch, pipeline, tasks_per_s, fraction in rows:
        section.rows.append([str(batch), "on" if pipeline else "off", fmt(tasks_per_s, 1),
                             fmt(ratio(tasks_per_s, baseline)), f"{100 * fraction:.1f} %"])
    section.checks += [
        Check("model busy, batch 1, pipelining on", 100 * busy.get((1, True), math.nan), 90,
              True, " %"),
        Check("model busy, batch 16, pipelining on", 100 * busy.get((16, True), math.nan), 90,
              True, " %"),
        Check("tasks/s batch 16 vs batch 1 (pipelining on)",
              ratio(rate.get((16, True), math.nan), baseline), 10.0, True),
    ]  # fmt: skip
    section.notes.append(
        f"`benchmarks/worker_batching.py`: {sizes.batching_tasks} queued tasks per "
        "configuration drained by one in-process `Worker` whose batch handler sleeps "
        f"{worker_batching.MODEL_SECONDS * 1000:.0f} ms per call whatever the batch size; "
        f"broker: gunicorn, 1 process x {BATCHING_THREADS} threads, Redis DB {REDIS_DB}, "
        "memory:// storage. Model busy = "
        "`Worker.stats.busy_fraction` (handler time / wall time)."
    )
    return section
