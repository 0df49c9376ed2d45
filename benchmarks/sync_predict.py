"""One request per task: ``POST /predict?wait=`` against submit + ``GET /getresult?wait=``.

    .venv/bin/python benchmarks/sync_predict.py [--tasks 400] [--redis-url redis://...] [--write]

A broker (gunicorn, one process, on a loopback port, ``memory://`` storage) and one worker
process (an echo handler, batch size 8, so the model costs nothing and the HTTP path is what is
measured) run side by side with the client threads of this process. Each client thread sends
its share of ``--tasks`` small JSON payloads one after the other and waits for each answer:

- ``sync``:  ``Client.predict`` — one ``POST /predict?wait=30`` per task;
- ``async``: ``Client.submit`` then ``Task.result`` — ``POST /predict``, then
  ``GET /getresult/<id>?wait=30``: the baseline, two requests per task.

The two modes alternate for ``--rounds`` rounds at each concurrency, and the median round is
reported: tasks/s, the ratio to the baseline measured in the same run, and the median and 95th
percentile latency of one task as its client sees it. ``--write`` puts the table into
``benchmarks/RESULTS.md`` between this benchmark's own markers, leaving the rest of the file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import procs, report  # noqa: E402
from client_sdk import Client  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- sync_predict: start -->", "<!-- sync_predict: end -->"
QUEUE = "sync-bench"
MODES = ("sync", "async")
THREADS = 64  # of the broker's one gunicorn process
BATCH_SIZE = 8  # of the one worker process


def echo(payload: Any) -> Any:
    """The worker's handler: no model time at all."""
    return payload


def one_task(client: Client, mode: str, value: int) -> float:
    started = time.perf_counter()
    if mode == "sync":
        answer = client.predict({"i": value}, queue=QUEUE, timeout=30)
    else:
        answer = client.submit({"i": value}, queue=QUEUE).result(timeout=30)
    assert answer == {"i": value}, answer
    return time.perf_counter() - started


def run_round(url: str, mode: str, tasks: int, concurrency: int) -> tuple[float, list[float]]:
    """(tasks/s, per-task latencies) of ``tasks`` tasks over ``concurrency`` client threads."""
    per_thread = tasks // concurrency

    def client_thread(offset: int) -> list[float]:
        with Client(url) as client:
            return [one_task(client, mode, offset + i) for i in range(per_thread)]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [t for chunk in pool.map(client_thread, range(0, tasks, per_thread))
                     for t in chunk]  # fmt: skip
    return len(latencies) / (time.perf_counter() - started), latencies


def measure(url: str, tasks: int, concurrency: int, rounds: int) -> dict[str, dict[str, float]]:
    run_round(url, "sync", min(tasks, 50), concurrency)  # warm up connections and the worker
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            rate, seen = run_round(url, mode, tasks, concurrency)
            rates[mode].append(rate)
            latencies[mode] += seen
    return {mode: {"rate": statistics.median(rates[mode]),
                   "p50": percentile(latencies[mode], 50),
                   "p95": percentile(latencies[mode], 95)} for mode in MODES}  # fmt: skip


def percentile(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def table(results: dict[int, dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.tasks} tasks per round, median of {args.rounds} alternating rounds; broker: "
        f"gunicorn, 1 process x {THREADS} threads, "
        f"{'Redis' if args.redis_url else 'embedded Redis'}, memory:// storage; one worker "
        f"process (echo handler, batch size {BATCH_SIZE}); "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, same machine.",
        "",
        "| clients | form | requests per task | tasks/s | x baseline | latency p50 | p95 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for concurrency, by_mode in results.items():
        baseline = by_mode["async"]["rate"]
        for mode in MODES:
            row = by_mode[mode]
            form = "`POST /predict?wait=30`" if mode == "sync" else "submit + `getresult?wait=30`"
            lines.append(f"| {concurrency} | {form} | {1 if mode == 'sync' else 2} | "
                         f"{row['rate']:.1f} | {row['rate'] / baseline:.2f} | "
                         f"{row['p50'] * 1000:.1f} ms | {row['p95'] * 1000:.1f} ms |")
    return "\n".join(lines)


def write_section(body: str) -> None:
    section = "\n".join([
        "## Synchronous predict: one request per task",
        "",
        "`benchmarks/sync_predict.py --write`: `POST /predict?wait=` (the result in the submit's "
        "own response) against the baseline of submit + `GET /getresult?wait=` (two requests), "
        "measured side by side in one run.",
        "",
        body,
    ])  # fmt: skip
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(report.replace_between(text, START, END, section))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--redis-url", default=os.environ.get("INFERBOX_TEST_REDIS_URL"),
                        help="a Redis to use (flushed!); default: the embedded one")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.redis_url:
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    with procs.Processes() as group:
        url, _ = procs.start_broker(group, args.redis_url, "memory://", workers=1, threads=THREADS)
        procs.start_workers(group, url, QUEUE, "benchmarks.sync_predict:echo", 1,
                            "--batch-size", str(BATCH_SIZE))  # fmt: skip
        results = {c: measure(url, args.tasks, c, args.rounds) for c in args.concurrency}
    body = table(results, args)
    print(body)
    if args.write:
        write_section(body)
        print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
