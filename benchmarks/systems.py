"""The systems under test, each started for the duration of a ``with`` block.

Each context yields ``Driver`` objects: a way to run one task end to end (submit, then the
result fetched by the client) from a client thread, the processes whose CPU counts, and
optionally a bulk form (``Client.map``). Every system gets ``WORKER_PROCESSES`` handler
processes and the same Redis database, flushed before it starts.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from benchmarks import floor, procs
from benchmarks.config import (
    BROKER_PROCESSES,
    BROKER_THREADS,
    CLIENT_THREADS,
    MAP_IN_FLIGHT,
    PAYLOAD_TIMEOUT,
    PREFETCH,
    REDIS_URL,
    WORKER_PROCESSES,
)
from client_sdk.http import make_session

Call = Callable[[Any], Any]
RAM_DIR = "/dev/shm"
FLOOR_SERVER = ("-m", "benchmarks.floor")  # the floor's app under the broker's gunicorn settings


_SCRATCH: list[str] = []  # the store directories this process made, removed when it exits


def scratch_dir(*, durable: bool = True) -> str:
    """A new directory for a broker's ``file://`` store (on /dev/shm unless ``durable``),
    removed when this process exits, not when its system stops.

    On ext4 without a journal (this machine's root file system; ``report.machine`` says which),
    allocating an inode steps over every inode freed in roughly the last minute, one
    buffer-cache lookup each (``recently_deleted`` in the kernel's ``fs/ext4/ialloc.c``). So
    removing one row's thousands of files would raise the next row's every file create from
    about 0.1 ms of CPU to 0.75-0.85 ms: a row would pay for the cleanup of the row before.
    """
    _SCRATCH.append(tempfile.mkdtemp(prefix="inferbox-bench-", dir=None if durable else RAM_DIR))
    return _SCRATCH[-1]


def _remove_scratch() -> None:
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


atexit.register(_remove_scratch)


# The names of the rows; the report finds its baselines and targets by them.
CELERY = "Celery (prefork)"
ONE_PER_TASK = "inferbox submit + result"


def batched_name(batch_size: int) -> str:
    return f"inferbox Client.map, worker batch {batch_size}"


def floor_name(hops: int) -> str:
    return f"bare HTTP, {hops} round trips a task (no broker)"


@dataclass
class Driver:
    """One way of running tasks on one system.

    ``caller()`` returns a function for one client thread that runs one task end to end and
    returns its result; ``bulk``, when set, runs a whole list at once (and is what throughput
    times instead of the threads); ``pids()`` names the system's processes (descendants are
    counted too)."""

    name: str
    caller: Callable[[], Call]
    pids: Callable[[], list[int]]
    bulk: Callable[[list[Any]], list[Any]] | None = None
    latency: bool = True  # whether the sequential latency section measures this driver
    throughput: bool = True  # whether the throughput section measures this driver
    hops: int = 0  # HTTP exchanges on a task's critical path (inferbox): its latency floor
    targeted: bool = True  # whether the targets are checked against its figures


def redis_client() -> redis.Redis:
    """A client of the benchmark database."""
    return redis.Redis.from_url(REDIS_URL)


def flush() -> redis.Redis:
    """The benchmark database, emptied."""
    client = redis_client()
    client.flushdb()
    return client


def _bin(name: str) -> str:
    """A console script of this environment (celery, rq)."""
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


@contextmanager
def celery() -> Iterator[list[Driver]]:
    """Celery: Redis broker and result backend, prefork pool of ``WORKER_PROCESSES``."""
    flush()
    with procs.Processes() as group:
        group.start([_bin("celery"), "-A", "benchmarks.celery_app", "worker", "--pool",
                     "prefork", "--concurrency", str(WORKER_PROCESSES), "--loglevel", "WARNING",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"],
                    procs.child_env(INFERBOX_BENCH_REDIS_URL=REDIS_URL))  # fmt: skip

        def caller() -> Call:
            from benchmarks.celery_app import make_app

            app = make_app()  # one per thread: Celery's result consumer is not thread-safe
            return lambda payload: app.send_task("bench.noop", args=(payload,)).get(
                timeout=PAYLOAD_TIMEOUT)

        yield [Driver(CELERY, caller, group.pids)]


@contextmanager
def rq(worker_class: str, label: str) -> Iterator[list[Driver]]:
    """RQ: ``WORKER_PROCESSES`` ``rq worker`` processes of ``worker_class``."""
    from rq import Queue

    connection = flush()
    command = [_bin("rq"), "worker", "--url", REDIS_URL, "--worker-class", worker_class,
               "--logging_level", "WARNING", "--quiet", "bench"]  # fmt: skip
    with procs.Processes() as group:
        for _ in range(WORKER_PROCESSES):
            group.start(command, procs.child_env())
        queue = Queue("bench", connection=connection)

        def caller() -> Call:
            return lambda payload: rq_call(queue, payload)

        yield [Driver(label, caller, group.pids)]


def rq_call(queue: Any, payload: Any) -> Any:
    """Enqueue one job and wait for its result the documented way (``latest_result``)."""
    job = queue.enqueue("benchmarks.handlers.noop", payload, result_ttl=600)
    result = job.latest_result(timeout=int(PAYLOAD_TIMEOUT))
    if result is None:
        raise TimeoutError(f"rq job {job.id} has no result after {PAYLOAD_TIMEOUT} s")
    if result.type != result.Type.SUCCESSFUL:
        raise RuntimeError(f"rq job {job.id} failed: {result.exc_string}")
    return result.return_value


def start_floor(group: procs.Processes, server: Sequence[str] = FLOOR_SERVER) -> str:
    """``benchmarks.floor`` (the trivial app, the broker's gunicorn settings) on a loopback
    port of ``group``; its base URL once it answers. ``server`` may name another command that
    serves the same app (``benchmarks.servers``)."""
    port = procs.free_port()
    process = group.start([procs.python(), *server, "--port", str(port)], procs.child_env())
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{url}/healthz", process)
    return url


@contextmanager
def http_floor(hops: tuple[int, ...] = (4, 2),
               server: Sequence[str] = FLOOR_SERVER) -> Iterator[list[Driver]]:
    """No broker at all: each task is so many bare ``POST /echo`` round trips to the trivial
    app of ``benchmarks.floor`` (the broker's gunicorn settings), through the SDK's exchange
    code (``benchmarks.floor.echo``) over a keep-alive session per client thread; one driver per
    count in ``hops``. Its throughput is the most any design crossing that many HTTP exchanges
    per task could reach with these HTTP stacks on this machine, whatever it did inside them.
    ``server``: as for ``start_floor``."""
    with procs.Processes() as group:
        url = start_floor(group, server)

        def caller(count: int) -> Callable[[], Call]:
            def make() -> Call:
                session = make_session(None, base_url=url)

                def call(payload: Any) -> Any:
                    for _ in range(count):
                        echoed = floor.echo(session, url, payload)
                    return echoed

                return call

            return make

        yield [Driver(floor_name(count), caller(count), group.pids, latency=False,
                      targeted=False) for count in hops]  # fmt: skip


@contextmanager
def inferbox(batch_size: int, *, durable: bool = True, module: str = "broker.cli",
             processes: int = BROKER_PROCESSES) -> Iterator[list[Driver]]:
    """inferbox in its production form: ``inferbox-broker serve`` (gunicorn gthread,
    ``processes`` x ``BROKER_THREADS``) on the benchmark Redis and ``file://`` storage,
    with ``WORKER_PROCESSES`` ``inferbox-worker`` processes of ``batch_size`` and ``PREFETCH``
    batches ahead. ``durable=False``
    puts the ``file://`` store on a RAM file system (``/dev/shm``: the same code, no disk
    write waits, fsync costs nothing): a latency-only variant that shows the HTTP path alone.
    (``memory://`` would not do: each of the broker's processes would hold its own store.)
    ``module`` may name another command that serves the broker (``benchmarks.servers``)."""
    from client_sdk import Client

    flush()
    data = scratch_dir(durable=durable)
    with procs.Processes() as group:
        profiled = _profiled(batch_size, durable)
        options = {"module": module, **_sampler_options(profiled)}
        url, broker = procs.start_broker(group, REDIS_URL, Path(data).as_uri(),
                                         workers=processes, threads=BROKER_THREADS,
                                         **options)  # fmt: skip
        if profiled:
            from benchmarks import profiling

            profiling.watch(lambda: procs.server_pids(broker))
        procs.start_workers(group, url, "bench", "benchmarks.handlers:noop",
                            WORKER_PROCESSES, "--batch-size", str(batch_size),
                            "--prefetch", str(PREFETCH))  # fmt: skip
        with Client(url, timeout=PAYLOAD_TIMEOUT) as client:
            drivers = _inferbox_drivers(client, batch_size, group.pids)
            if not durable:
                for driver in drivers:
                    driver.name += " (RAM disk)"
                    driver.targeted = False
            yield drivers


def _profiled(batch_size: int, durable: bool) -> bool:
    """Whether ``--profile`` samples this broker: the one of the one-request-per-task rows on
    disk, the rows ``e2e`` samples."""
    from benchmarks import profiling

    return profiling.folder() is not None and batch_size == 1 and durable


def _sampler_options(profiled: bool) -> dict[str, str]:
    """Broker options that run it under the in-process sampler, where py-spy cannot."""
    from benchmarks import profiling

    found = profiling.folder()
    if not profiled or found is None or profiling.uses_py_spy():
        return {}
    return {"module": "benchmarks.sampler", "INFERBOX_BENCH_PROFILE_DIR": str(found)}


def _inferbox_drivers(client: Any, batch_size: int,
                      pids: Callable[[], list[int]]) -> list[Driver]:
    def submit_result() -> Call:
        return lambda payload: client.submit(payload, queue="bench").result(
            timeout=PAYLOAD_TIMEOUT)

    def predict() -> Call:
        return lambda payload: client.predict(payload, queue="bench", timeout=PAYLOAD_TIMEOUT)

    def mapped(payloads: list[Any]) -> list[Any]:
        return list(client.map(payloads, queue="bench", concurrency=MAP_IN_FLIGHT,
                               timeout=PAYLOAD_TIMEOUT))  # fmt: skip

    if batch_size > 1:
        return [Driver(batched_name(batch_size), predict, pids,
                       bulk=mapped, latency=False)]
    return [Driver(ONE_PER_TASK, submit_result, pids, hops=4),
            Driver("inferbox predict?wait", predict, pids, hops=3)]


def run_threads(call_factory: Callable[[], Call], payloads: list[Any],
                threads: int = CLIENT_THREADS) -> list[Any]:
    """Run every payload through ``threads`` client threads; the results in input order.
    Raises the first error any task raised."""
    results: list[Any] = [None] * len(payloads)
    errors: list[BaseException] = []
    cursor = iter(range(len(payloads)))
    lock = threading.Lock()

    def work() -> None:
        call = call_factory()
        while not errors:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            try:
                results[index] = call(payloads[index])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return results
