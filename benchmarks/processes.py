"""How many broker processes a host should run: the broker of section 1 with 1, 2, 3, 4 of them.

    python -m benchmarks.processes [--processes 1,2,3,4] [--rounds 3] [--tasks 1000]

``inferbox-broker --workers N`` sets how many gunicorn processes serve; each runs Python under
its own GIL. Each round starts, times and stops the broker in the form section 1 of
``benchmarks.run`` runs it (``BROKER_THREADS`` threads a process, the benchmark Redis,
``file://`` storage on disk, ``WORKER_PROCESSES`` ``inferbox-worker`` processes with
``--prefetch``) once per process count, in turn (the order reversed every other round), timed
on submit + result and on ``predict?wait`` with ``CLIENT_THREADS`` client threads.

Prints a Markdown table: tasks/s (median of the rounds, slowest and fastest), the rate over
that of ``BROKER_PROCESSES`` processes (what section 1 runs; the median of the rounds' ratios)
and CPU ms a task (the client; the servers, the broker's processes and its workers; Redis). Not
part of ``benchmarks.run``: a sizing measurement for the machine it runs on.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from benchmarks import systems, variants
from benchmarks.config import BROKER_PROCESSES, FULL
from benchmarks.e2e import Throughput
from benchmarks.variants import System


def name(processes: int) -> str:
    return f"{processes} process{'' if processes == 1 else 'es'}"


def systems_of(processes: int) -> list[System]:
    """The broker (one request per task) with ``processes`` processes."""
    return [lambda: systems.inferbox(1, processes=processes)]


def table(rows: list[Throughput]) -> str:
    """A row per process count and system, with its rate over ``BROKER_PROCESSES``'s."""
    return variants.table(rows, baseline=name(BROKER_PROCESSES), label="broker")


def counts(text: str) -> list[int]:
    """``1,2,4`` -> [1, 2, 4]: distinct positive counts, in the order given."""
    try:
        found = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use comma-separated numbers") from None
    if not found or min(found) < 1 or len(set(found)) != len(found):
        raise argparse.ArgumentTypeError(f"{text!r}: use distinct numbers of 1 or more")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=counts, default=[1, 2, 3, 4],
                        help="broker process counts to compare (1,2,3,4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1000, help="timed tasks a round")
    args = parser.parse_args(argv)
    if BROKER_PROCESSES not in args.processes:
        parser.error(f"--processes must include {BROKER_PROCESSES}, the baseline")
    sizes = replace(FULL, rounds=args.rounds, throughput_tasks=args.tasks * args.rounds)
    listed = ",".join(map(str, args.processes))
    print(f"`python -m benchmarks.processes --processes {listed} --rounds {args.rounds} "
          f"--tasks {args.tasks}` ({os.cpu_count()} cores)\n")
    rows = variants.measure(sizes, {name(count): systems_of(count) for count in args.processes})
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
