"""Sections 1 and 2: end-to-end throughput and sequential latency of every system.

The run goes in rounds (``Sizes.rounds``). In each, every system is started
(``benchmarks.systems``), warmed up, timed for throughput with ``CLIENT_THREADS`` client
threads, then for latency with one thread, and stopped; then the latency floor is measured
against ``benchmarks.floor`` served with the broker's gunicorn settings. A system's
throughput is the median of its rounds, and its ratio to a baseline the median of the ratios
within each round, so a machine that drifts between rounds shifts both sides of a ratio
alike. Latency samples and floor samples are pooled over the rounds.
"""

from __future__ import annotations

import math
import os
import statistics
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
    PREFETCH,
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
FLOOR_2 = floor_name(2)  # the client's own two exchanges of submit + result, nothing behind
FLOOR_HOPS = (3, 4)  # predict?wait crosses 3 HTTP exchanges, submit + getresult?wait 4


@dataclass
class Throughput:
    """One system's throughput in one round."""

    name: str
    tasks: int
    seconds: float
    cpu: dict[str, float]
    round: int = 1

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds else math.nan


@dataclass
class Rounds:
    """One system's throughput over every round it completed, keyed by round number."""

    name: str
    runs: dict[int, Throughput] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        return sum(run.tasks for run in self.runs.values())

    @property
    def rate(self) -> float:
        """The median of the rounds' rates."""
        return _median([run.rate for run in self.runs.values()])

    @property
    def spread(self) -> tuple[float, float]:
        """The slowest and the fastest round's rate."""
        rates = [run.rate for run in self.runs.values()] or [math.nan]
        return min(rates), max(rates)

    def cpu_ms(self, part: str | None = None) -> float:
        """CPU milliseconds per task over all rounds: of ``part``, or of every part."""
        seconds = sum(seconds for run in self.runs.values() for name, seconds in run.cpu.items()
                      if part in (None, name))  # fmt: skip
        return 1000 * seconds / self.tasks if self.tasks else math.nan


def paired_ratio(system: Rounds | None, baseline: Rounds | None) -> float:
    """The median, over the rounds both completed, of the system's rate / the baseline's rate
    in the same round; NaN when either is missing."""
    if system is None or baseline is None:
        return math.nan
    return _median([ratio(run.rate, baseline.runs[number].rate)
                    for number, run in system.runs.items() if number in baseline.runs])


def by_system(rows: list[Throughput]) -> dict[str, Rounds]:
    """The rounds of each system, in the order the systems first appear."""
    found: dict[str, Rounds] = {}
    for row in rows:
        found.setdefault(row.name, Rounds(row.name)).runs[row.round] = row
    return found


def _median(values: list[float]) -> float:
    known = [value for value in values if not math.isnan(value)]
    return statistics.median(known) if known else math.nan


@dataclass
class Failure:
    """A system that did not start or a measurement that raised."""

    name: str
    what: str  # throughput, latency, or start or stop
    error: str
    round: int = 1


@dataclass
class Latency:
    name: str
    seconds: list[float] = field(default_factory=list)
    hops: int = 0  # the floor it is compared with: this many bare round trips (0: none)
    targeted: bool = False  # whether the latency targets apply to it
    floor: bool = False  # whether it is the floor of ``hops`` round trips itself

    def p(self, fraction: float) -> float:
        return 1000 * percentile(self.seconds, fraction)


def pooled(rows: list[Latency]) -> list[Latency]:
    """One row per name with the samples of every round, in the order names first appear."""
    rows_by_name: dict[str, Latency] = {}
    for row in rows:
        into = rows_by_name.setdefault(row.name, Latency(row.name, [], row.hops, row.targeted,
                                                         row.floor))  # fmt: skip
        into.seconds += row.seconds
    return list(rows_by_name.values())


def payloads(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """Small JSON payloads, each different."""
    return [{"i": offset + i, "text": "hello"} for i in range(count)]


def measure_throughput(driver: Driver, sizes: Sizes, number: int = 1) -> Throughput:
    """Round ``number``'s share of the timed tasks, after its share of the warm-up."""
    meter = CpuMeter(driver.pids, systems.redis_client())
    work = payloads(sizes.per_round(sizes.throughput_tasks))
    _run(driver, payloads(sizes.per_round(sizes.warmup_tasks), offset=10**6))
    profiled = profiling.sampling() if driver.name == ONE_PER_TASK else nullcontext()
    with profiled:
        meter.start()
        started = time.perf_counter()
        results = _run(driver, work)
        elapsed = time.perf_counter() - started
        cpu = meter.stop()
    if results != work:
        raise AssertionError(f"{driver.name}: results differ from the payloads")
    return Throughput(driver.name, len(work), elapsed, cpu, number)


def _run(driver: Driver, work: list[Any]) -> list[Any]:
    if driver.bulk is not None:
        return driver.bulk(work)
    return systems.run_threads(driver.caller, work, CLIENT_THREADS)


def measure_latency(driver: Driver, sizes: Sizes, number: int = 1) -> Latency:
    """Round ``number``'s share of the sequential tasks, after 20 untimed."""
    call = driver.caller()
    for payload in payloads(20, offset=2 * 10**6):
        call(payload)
    latency = Latency(driver.name, hops=driver.hops, targeted=driver.targeted)
    for payload in payloads(sizes.per_round(sizes.latency_tasks)):
        started = time.perf_counter()
        if call(payload) != payload:
            raise AssertionError(f"{driver.name}: a result differs from its payload")
        latency.seconds.append(time.perf_counter() - started)
    return latency


def measure_floor(sizes: Sizes) -> list[Latency]:
    """A round's share of sequential groups of 3 and 4 bare round trips to the trivial
    endpoint."""
    with procs.Processes() as group:
        url = systems.start_floor(group)
        count = sizes.per_round(sizes.latency_tasks)
        return [Latency(f"floor x{hops}", floor.round_trips(url, count, hops), hops=hops,
                        floor=True) for hops in FLOOR_HOPS]  # fmt: skip


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


Row = Throughput | Latency | Failure


def measure_all(sizes: Sizes, throughput: bool, latency: bool,
                log: Callable[[str], None]) -> Iterator[Row]:
    """Every system's figures, round after round, then (with ``latency``) the round's floor;
    a system or measurement that fails yields a ``Failure`` and the run goes on."""
    for number in range(1, sizes.rounds + 1):
        log(f"round {number} of {sizes.rounds}")
        for label, context in system_contexts():
            try:
                with context() as drivers:
                    for driver in drivers:
                        yield from _measure(driver, sizes, throughput, latency, log, number)
            except Exception as exc:  # noqa: BLE001 - reported with the section, the run goes on
                log(f"{label} failed: {exc!r}")
                yield Failure(label, "start or stop", f"{type(exc).__name__}: {exc}", number)
        if latency:
            log("latency: floor")
            try:
                yield from measure_floor(sizes)
            except Exception as exc:  # noqa: BLE001 - as above
                log(f"latency floor failed: {exc!r}")
                yield Failure("floor", "latency", f"{type(exc).__name__}: {exc}", number)


def _measure(driver: Driver, sizes: Sizes, throughput: bool, latency: bool,
             log: Callable[[str], None], number: int) -> Iterator[Row]:
    steps: list[tuple[str, Callable[[Driver, Sizes, int], Throughput | Latency]]] = []
    if throughput and driver.throughput:
        steps.append(("throughput", measure_throughput))
    if latency and driver.latency:
        steps.append(("latency", measure_latency))
    for what, measure in steps:
        log(f"{what}: {driver.name}")
        try:
            yield measure(driver, sizes, number)
        except Exception as exc:  # noqa: BLE001 - reported with the section, the run goes on
            log(f"{what}: {driver.name} failed: {exc!r}")
            yield Failure(driver.name, what, f"{type(exc).__name__}: {exc}", number)


def failure_notes(failures: list[Failure], what: str) -> list[str]:
    return [f"**{failure.name}: the {failure.what} run of round {failure.round} failed:** "
            f"{failure.error}" for failure in failures
            if failure.what in (what, "start or stop")]  # fmt: skip


def throughput_section(rows: list[Throughput], sizes: Sizes) -> Section:
    measured = by_system(rows)
    celery, rq_fork = measured.get(CELERY), measured.get(RQ_FORK)
    section = Section("throughput", "1. End-to-end throughput, no-op handler",
                      ["system", "tasks", "tasks/s", "rounds", "x Celery", "x RQ fork",
                       "CPU ms/task", "client", "servers", "redis"])  # fmt: skip
    for system in measured.values():
        slowest, fastest = system.spread
        section.rows.append([system.name, str(system.tasks), fmt(system.rate, 1),
                             f"{fmt(slowest, 0)}-{fmt(fastest, 0)}",
                             fmt(paired_ratio(system, celery)),
                             fmt(paired_ratio(system, rq_fork)),
                             fmt(system.cpu_ms(), 3), fmt(system.cpu_ms("client"), 3),
                             fmt(system.cpu_ms("servers"), 3), fmt(system.cpu_ms("redis"), 3)])
    one, batched = measured.get(ONE_PER_TASK), measured.get(BATCHED)
    bare, bare_2 = measured.get(FLOOR), measured.get(FLOOR_2)
    section.checks += [
        Check("throughput, one request per task vs Celery", paired_ratio(one, celery), 1.0,
              True),
        Check("throughput, one request per task vs RQ fork", paired_ratio(one, rq_fork), 3.0,
              True),
        Check("throughput, batched vs Celery", paired_ratio(batched, celery), 3.0, True),
    ]  # fmt: skip
    section.notes += [
        f"{sizes.rounds} rounds; in each, every system in turn is started, warmed up "
        f"({sizes.per_round(sizes.warmup_tasks)} untimed tasks), timed on "
        f"{sizes.per_round(sizes.throughput_tasks)} tasks and stopped. tasks/s is the median "
        "of a system's rounds, `rounds` its slowest and fastest round, and `x Celery` / "
        "`x RQ fork` the median of its rounds' ratios, each against the baseline's run of the "
        "same round. CPU ms/task is over all rounds.",
        f"{CLIENT_THREADS} client threads and {WORKER_PROCESSES} worker processes for every "
        f"system; one Redis (DB {REDIS_DB}), flushed before each system starts.",
        "CPU ms/task: user + system CPU of every process of the system (client = this "
        "benchmark process alone, its client threads; servers = the Celery/RQ worker "
        "processes or the inferbox broker's gunicorn processes plus its workers, forked "
        "children included; redis = the Redis "
        "server's own `INFO cpu` delta, which also counts anything else using that server).",
        f"inferbox runs `inferbox-broker serve` (gunicorn gthread, {BROKER_PROCESSES} processes "
        f"x {BROKER_THREADS} threads, file:// storage in a temporary directory, one per "
        "system, removed when the benchmark ends: removed between rows, on ext4 without a "
        "journal its thousands of freed inodes would slow the next row's file creates) with "
        f"{WORKER_PROCESSES} `inferbox-worker` processes "
        f"(`benchmarks.handlers:noop`, `--prefetch {PREFETCH}`: each holds up to {PREFETCH} "
        "batches taken ahead of its model, as Celery's default prefetch multiplier lets each "
        "of its processes hold 4 tasks; the worker's default is 1); the batched row uses "
        f"`Client.map` (one client thread: `POST /predictbatch` and `POST /getresults`, "
        f"{MAP_IN_FLIGHT} tasks in flight; its default is 64) and workers with "
        f"`--batch-size {BATCH_SIZE}`.",
        f"`{FLOOR}`: no broker, no Redis, no storage; each task is 4 `POST` round trips "
        "(small JSON) to the trivial app of the latency floor (the broker's gunicorn "
        "settings), made by the SDK's own exchange code (`client_sdk.http.send` on a session "
        "of `make_session`) over a keep-alive connection per client thread. It "
        "is the most any design crossing 4 HTTP exchanges per task could reach with these "
        f"HTTP stacks here: {fmt(paired_ratio(bare, celery))}x Celery. inferbox submit + "
        f"result reaches {fmt(paired_ratio(one, bare))}x of it.",
        f"`{FLOOR_2}`: the same, 2 round trips a task: what a client's submit and result "
        "requests cost with nothing behind them (no broker work, no worker traffic at all). "
        f"{fmt(paired_ratio(bare_2, celery))}x Celery: the most submit + result over HTTP "
        "could reach here with these stacks whatever the broker and the workers did.",
        "The `(RAM disk)` rows run the same broker and workers with the file:// store on "
        "/dev/shm (tmpfs: fsync costs nothing), as non-durable as the baselines' Redis, which "
        "keeps nothing on disk here; the targets are checked against the rows on disk.",
    ]
    return section


def latency_section(rows: list[Latency], sizes: Sizes) -> Section:
    """The rounds' samples of each system pooled, compared with the pooled floors."""
    measured = pooled(rows)
    floors = {row.hops: row for row in measured if row.floor}
    section = Section("latency", "2. Latency overhead, sequential, no-op handler",
                      ["system", "p50 ms", "p90 ms", "p99 ms", "floor p50", "floor p99",
                       "p50 x floor", "p99 x floor"])  # fmt: skip
    for row in [row for row in measured if not row.floor] + list(floors.values()):
        base = None if row.floor else floors.get(row.hops)
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
        f"{sizes.rounds} x {sizes.per_round(sizes.latency_tasks)} sequential tasks per system "
        "(one client thread, 20 untimed first in each round), pooled over the rounds; "
        "submit -> result in the client's hand. The floors are measured at the end of each "
        "round and pooled likewise.",
        "Floor: the same number of sequential `POST` round trips (small JSON), made by the "
        "SDK's own exchange code (`client_sdk.http.send`) over one keep-alive session, to a "
        "trivial WSGI app served with "
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
