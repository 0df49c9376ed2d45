"""Where one task's latency goes: the steps of a sequential ``predict?wait``, timed in place.

    python -m benchmarks.path [--tasks 300] [--ram-disk] [--submit-result]

The broker and the workers of section 2 (``inferbox-broker serve``, gunicorn gthread,
``BROKER_PROCESSES`` x ``BROKER_THREADS``, the benchmark Redis, ``file://`` storage on disk or
with ``--ram-disk`` on /dev/shm; ``WORKER_PROCESSES`` ``inferbox-worker`` processes of the no-op
handler) run under ``benchmarks.tracing``, which times the steps of a task in every one of
their processes. One client thread then runs ``--tasks`` tasks one after another, as section 2
does, and each step is placed in the task whose client-side window it started in.

Printed: per step (the n-th call of a function within a task), the median of when it started
(ms after the client began the task) and of how long it took, over the tasks that had it; the
client's own total last. A long-poll answered in a task started in the task before, so what a
worker's take does on the way shows as the broker's ``TaskQueue.take`` and ``FileStore._get``
calls, not as an HTTP request. An ``HTTP <path>`` step names a task's id in the path ``<id>``
(``HTTP /getresult/<id>``); an ``HTTP sent <path>`` step runs from the view's return to the
server's close of its body: the response going out. Not part of ``benchmarks.run``: a
tool for reading a latency figure, whose own timers add a few microseconds a step.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import procs, systems, tracing
from benchmarks.config import (
    BROKER_PROCESSES,
    BROKER_THREADS,
    PAYLOAD_TIMEOUT,
    PREFETCH,
    REDIS_URL,
    WORKER_PROCESSES,
)

Event = tuple[float, float, str]  # wall-clock start, end, step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.path",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--tasks", type=int, default=300, help="sequential tasks (300)")
    parser.add_argument("--ram-disk", action="store_true", help="file:// store on /dev/shm")
    parser.add_argument("--submit-result", action="store_true",
                        help="submit + getresult?wait instead of predict?wait")
    return parser.parse_args(argv)


def traced_run(tasks: int, *, ram_disk: bool,
               submit_result: bool) -> tuple[list[tuple[float, float]], list[Event]]:
    """The client's window of each task, and every step the processes timed."""
    trace = Path(tempfile.mkdtemp(prefix="inferbox-trace-"))
    data = systems.scratch_dir(durable=not ram_disk)
    systems.flush()
    try:
        with procs.Processes() as group:
            url, _ = procs.start_broker(group, REDIS_URL, Path(data).as_uri(),
                                        workers=BROKER_PROCESSES, threads=BROKER_THREADS,
                                        module="benchmarks.tracing",
                                        INFERBOX_BENCH_TRACE_DIR=str(trace))  # fmt: skip
            procs.start_workers(group, url, "bench", "benchmarks.handlers:noop",
                                WORKER_PROCESSES, "--prefetch", str(PREFETCH),
                                launcher=("-m", "benchmarks.tracing", "worker"),
                                INFERBOX_BENCH_TRACE_DIR=str(trace))  # fmt: skip
            windows = _run(url, tasks, submit_result)
            time.sleep(3 * tracing.FLUSH_EVERY)  # the processes' last writes
        return windows, _read(trace)
    finally:
        shutil.rmtree(trace, ignore_errors=True)


def _run(url: str, tasks: int, submit_result: bool) -> list[tuple[float, float]]:
    from client_sdk import Client

    windows = []
    with Client(url, timeout=PAYLOAD_TIMEOUT) as client:
        def one(payload: dict[str, int]) -> object:
            if submit_result:
                return client.submit(payload, queue="bench").result(timeout=PAYLOAD_TIMEOUT)
            return client.predict(payload, queue="bench", timeout=PAYLOAD_TIMEOUT)

        for index in range(30):  # warm-up: connections open, code paths hot, workers polling
            one({"i": index})
        for index in range(tasks):
            started = time.time()
            one({"i": index})
            windows.append((started, time.time()))
    return windows


def _read(folder: Path) -> list[Event]:
    events = []
    for path in folder.glob("*.txt"):
        for line in path.read_text().splitlines():
            start, end, name = line.split(" ", 2)
            events.append((float(start), float(end), name))
    return sorted(events)


def steps(windows: list[tuple[float, float]],
          events: list[Event]) -> list[tuple[str, int, float, float]]:
    """(step, tasks that had it, median start ms, median duration ms), by median start; steps
    found in fewer than half of the tasks left out; the client's total last."""
    found: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    cursor = 0
    for begin, end in windows:
        while cursor < len(events) and events[cursor][0] < begin:
            cursor += 1
        seen: collections.Counter[str] = collections.Counter()
        index = cursor
        while index < len(events) and events[index][0] <= end:
            start, stop, name = events[index]
            seen[name] += 1
            step = name if seen[name] == 1 else f"{name} #{seen[name]}"
            found[step].append(((start - begin) * 1000, (stop - start) * 1000))
            index += 1
    rows = [(step, len(values), statistics.median(v[0] for v in values),
             statistics.median(v[1] for v in values))
            for step, values in found.items() if len(values) >= len(windows) / 2]  # fmt: skip
    rows.sort(key=lambda row: row[2])
    totals = [(end - begin) * 1000 for begin, end in windows]
    return rows + [("client: the whole task", len(windows), 0.0, statistics.median(totals))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    windows, events = traced_run(args.tasks, ram_disk=args.ram_disk,
                                 submit_result=args.submit_result)  # fmt: skip
    kind = "submit + getresult?wait" if args.submit_result else "predict?wait"
    store = "/dev/shm" if args.ram_disk else "disk"
    print(f"{kind}, {args.tasks} sequential tasks, file:// store on {store}")
    print(f"{'step':44} {'tasks':>5} {'starts ms':>10} {'takes ms':>9}")
    for step, count, start, duration in steps(windows, events):
        print(f"{step:44} {count:5d} {start:10.2f} {duration:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
