"""Sections 1 and 2: end-to-end throughput and sequential latency of every system.

Each system is started once (``benchmarks.systems``), warmed up, timed for throughput with
``CLIENT_THREADS`` client threads, then for latency with one thread, and stopped. The
latency floor is measured against ``benchmarks.floor`` served with the broker's gunicorn
settings.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from benchmarks import floor, procs, profiling, systems
from benchmarks.config import (
    BATCH_SIZE,
    BROKER_PROCESSES,
    BROKER_THREADS,
    CLIENT_THREADS,
    MAP_IN_FLIGHT,
    REDIS_DB,
    WORKER_PROCESSES,
    Sizes,
)
from benchmarks.report import Check, Section, fmt, ratio
from benchmarks.stats import CpuMeter, percentile
from benchmarks.systems import CELERY, ONE_PER_TASK, Driver, batched_name, floor_name

RQ_FORK, RQ_SIMPLE = "RQ Worker (fork)", "RQ SimpleWorker"
BATCHED = batched_name(BATCH_SIZE)
FLOOR = floor_name(4)
FLOOR_HOPS = (3, 4)  # predict?wait crosses 3 HTTP exchanges, submit + getresult?wait 4


@dataclass
class Throughput:
    name: str
    tasks: int
    seconds: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else math.nan

    @property
    def cpu_per_task_ms(self) -> float:
        return 1000 * sum(self.cpu.values()) / self.tasks


@dataclass
class Failure:
    """A system that did not start or a measurement that raised."""

    name: str
    what: str  # throughput, latency, or start or stop
    error: str


@dataclass
class Latency:
    name: str
    seconds: list[float] = field(default_factory=list)
    hops: int = 0  # the floor it is compared with: this many bare round trips (0: none)
    targeted: bool = False  # whether the latency targets apply to it

    def p(self, fraction: float) -> float:
        return 1000 * percentile(self.seconds, fraction)


def payloads(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """Small JSON payloads, each different."""
    return [{"i": offset + i, "text": "hello"} for i in range(count)]


def measure_throughput(driver: Driver, sizes: Sizes) -> Throughput:
    meter = CpuMeter(driver.pids, systems.redis_client())
    work = payloads(sizes.throughput_tasks)
    _run(driver, payloads(sizes.warmup_tasks, offset=10**6))
    profiled = profiling.sampling() if driver.name == ONE_PER_TASK else nullcontext()
    with profiled:
        meter.start()
        started = time.perf_counter()
        results = _run(driver, work)
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
    if results != work:
        raise AssertionError(f"{driver.name}: results differ from the payloads")
    return Throughput(driver.name, len(work), elapsed, cpu)


def _run(driver: Driver, work: list[Any]) -> list[Any]:
    if driver.bulk is not None:
        return driver.bulk(work)
    return systems.run_threads(driver.caller, work, CLIENT_THREADS)


def measure_latency(driver: Driver, sizes: Sizes) -> Latency:
    call = driver.caller()
    for payload in payloads(20, offset=2 * 10**6):
        call(payload)
    latency = Latency(driver.name, hops=driver.hops, targeted=driver.targeted)
    for payload in payloads(sizes.latency_tasks):
        started = time.perf_counter()
        if call(payload) != payload:
            raise AssertionError(f"{driver.name}: a result differs from its payload")
        latency.seconds.append(time.perf_counter() - started)
    return latency


def measure_floor(sizes: Sizes) -> dict[int, Latency]:
    """Sequential groups of 3 and 4 bare round trips to the trivial endpoint."""
    with procs.Processes() as group:
        url = systems.start_floor(group)
        return {hops: Latency(f"floor x{hops}", floor.round_trips(url, sizes.latency_tasks, hops))
                for hops in FLOOR_HOPS}  # fmt: skip


def system_contexts() -> list[tuple[str, Callable[[], AbstractContextManager[list[Driver]]]]]:
    return [(CELERY, systems.celery),
            (RQ_FORK, lambda: systems.rq("rq.worker.Worker", RQ_FORK)),
            (RQ_SIMPLE, lambda: systems.rq("rq.worker.SimpleWorker", RQ_SIMPLE)),
            (FLOOR, systems.http_floor),
            ("inferbox", lambda: systems.inferbox(1)),
            ("inferbox batched", lambda: systems.inferbox(BATCH_SIZE)),
            *([("inferbox RAM disk", lambda: systems.inferbox(1, durable=False)),
               ("inferbox batched RAM disk", lambda: systems.inferbox(BATCH_SIZE, durable=False))]
              if os.path.isdir(systems.RAM_DIR) else [])]  # fmt: skip


def measure_all(sizes: Sizes, throughput: bool, latency: bool,
                log: Callable[[str], None]) -> Iterator[Throughput | Latency | Failure]:
    """Every system's figures; a system or measurement that fails yields a ``Failure`` and
    the run goes on with the next."""
    for label, context in system_contexts():
        try:
            with context() as drivers:
                for driver in drivers:
                    yield from _measure(driver, sizes, throughput, latency, log)
        except Exception as exc:  # noqa: BLE001 - reported with the section, the run goes on
            log(f"{label} failed: {exc!r}")
            yield Failure(label, "start or stop", f"{type(exc).__name__}: {exc}")


def _measure(driver: Driver, sizes: Sizes, throughput: bool, latency: bool,
             log: Callable[[str], None]) -> Iterator[Throughput | Latency | Failure]:
    steps: list[tuple[str, Callable[[Driver, Sizes], Throughput | Latency]]] = []
    if throughput and driver.throughput:
        steps.append(("throughput", measure_throughput))
    if latency and driver.latency:
        steps.append(("latency", measure_latency))
    for what, measure in steps:
        log(f"{what}: {driver.name}")
        try:
            yield measure(driver, sizes)
        except Exception as exc:  # noqa: BLE001 - reported with the section, the run goes on
            log(f"{what}: {driver.name} failed: {exc!r}")
            yield Failure(driver.name, what, f"{type(exc).__name__}: {exc}")


def failure_notes(failures: list[Failure], what: str) -> list[str]:
    return [f"**{failure.name}: the {failure.what} run failed:** {failure.error}"
            for failure in failures if failure.what in (what, "start or stop")]


def throughput_section(rows: list[Throughput], sizes: Sizes) -> Section:
    by_name = {row.name: row.rate for row in rows}
    celery, rq_fork = by_name.get(CELERY, math.nan), by_name.get(RQ_FORK, math.nan)
    section = Section("throughput", "1. End-to-end throughput, no-op handler",
                      ["system", "tasks", "seconds", "tasks/s", "x Celery", "x RQ fork",
                       "CPU ms/task", "client", "servers", "redis"])  # fmt: skip
    for row in rows:
        cpu = {part: 1000 * seconds / row.tasks for part, seconds in row.cpu.items()}
        section.rows.append([row.name, str(row.tasks), fmt(row.seconds), fmt(row.rate, 1),
                             fmt(ratio(row.rate, celery)), fmt(ratio(row.rate, rq_fork)),
                             fmt(row.cpu_per_task_ms, 3), fmt(cpu["client"], 3),
                             fmt(cpu["servers"], 3), fmt(cpu["redis"], 3)])  # fmt: skip
    batched = by_name.get(BATCHED, math.nan)
    one = by_name.get(ONE_PER_TASK, math.nan)
    bare = by_name.get(FLOOR, math.nan)
    section.checks += [
        Check("throughput, one request per task vs Celery", ratio(one, celery), 1.0, True),
        Check("throughput, one request per task vs RQ fork", ratio(one, rq_fork), 3.0, True),
        Check("throughput, batched vs Celery", ratio(batched, celery), 3.0, True),
    ]
    section.notes += [
        f"{sizes.throughput_tasks} timed tasks per system after {sizes.warmup_tasks} untimed; "
        f"{CLIENT_THREADS} client threads and {WORKER_PROCESSES} worker processes for every "
        f"system; one Redis (DB {REDIS_DB}), flushed before each system starts.",
        "CPU ms/task: user + system CPU of every process of the system (client = this "
        "benchmark process alone, its client threads; servers = the Celery/RQ worker "
        "processes or the inferbox broker's gunicorn processes plus its workers, forked "
        "children included; redis = the Redis "
        "server's own `INFO cpu` delta, which also counts anything else using that server).",
        f"inferbox runs `inferbox-broker serve` (gunicorn gthread, {BROKER_PROCESSES} processes "
        f"x {BROKER_THREADS} threads, file:// storage in a temporary directory) with "
        f"{WORKER_PROCESSES} `inferbox-worker` processes "
        "(`benchmarks.handlers:noop`); the batched row uses `Client.map` (one client thread: "
        f"`POST /predictbatch` and `POST /getresults`, {MAP_IN_FLIGHT} tasks in flight; its "
        f"default is 64) and workers with `--batch-size {BATCH_SIZE}`.",
        f"`{FLOOR}`: no broker, no Redis, no storage; each task is 4 `POST` round trips "
        "(small JSON) to the trivial app of the latency floor (the broker's gunicorn "
        "settings) over a keep-alive `requests.Session` per client thread, as the SDK's. It "
        "is the most any design crossing 4 HTTP exchanges per task could reach with these "
        f"HTTP stacks here: {fmt(ratio(bare, celery))}x Celery. inferbox submit + result "
        f"reaches {fmt(ratio(one, bare))}x of it.",
        "The `(RAM disk)` rows run the same broker and workers with the file:// store on "
        "/dev/shm (tmpfs: fsync costs nothing), as non-durable as the baselines' Redis, which "
        "keeps nothing on disk here; the targets are checked against the rows on disk.",
    ]
    return section


def latency_section(rows: list[Latency], floors: dict[int, Latency], sizes: Sizes) -> Section:
    section = Section("latency", "2. Latency overhead, sequential, no-op handler",
                      ["system", "p50 ms", "p90 ms", "p99 ms", "floor p50", "floor p99",
                       "p50 x floor", "p99 x floor"])  # fmt: skip
    for row in [*rows, *floors.values()]:
        base = floors.get(row.hops)
        cells = [row.name, fmt(row.p(0.5)), fmt(row.p(0.9)), fmt(row.p(0.99))]
        if base is None:
            section.rows.append(cells + ["", "", "", ""])
            continue
        p50, p99 = ratio(row.p(0.5), base.p(0.5)), ratio(row.p(0.99), base.p(0.99))
        section.rows.append(cells + [fmt(base.p(0.5)), fmt(base.p(0.99)), fmt(p50), fmt(p99)])
        if row.targeted:
            section.checks += [
                Check(f"latency p50 vs {row.hops} bare round trips ({row.name})", p50, 2.0,
                      False),
                Check(f"latency p99 vs {row.hops} bare round trips ({row.name})", p99, 5.0,
                      False),
            ]  # fmt: skip
    section.notes += [
        f"{sizes.latency_tasks} sequential tasks per system (one client thread) after 20 "
        "untimed; submit -> result in the client's hand.",
        "Floor: the same number of sequential `POST` round trips (small JSON) over one "
        "keep-alive `requests.Session` to a trivial WSGI app served with "
        f"`broker.cli.gunicorn_options` (gthread, {BROKER_PROCESSES} x {BROKER_THREADS} "
        f"threads, keepalive {procs.server_option('keepalive')} s): 4 for "
        "submit + `getresult?wait` (submit, the worker's take answer, the worker's result "
        "post, the client's getresult), 3 for `predict?wait`.",
        "The inferbox rows run the production configuration (file:// storage on disk: each "
        "task's payload and result are written and fsynced before they are acknowledged); "
        "the `(RAM disk)` rows run the same broker and workers with the file:// store on "
        "/dev/shm (tmpfs, where fsync costs nothing), which shows the HTTP path alone. The "
        "targets are checked against the production rows.",
    ]
    return section
