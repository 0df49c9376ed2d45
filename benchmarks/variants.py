"""Variants of inferbox side by side: the rounds and the table of ``benchmarks.servers`` and
``benchmarks.processes``.

Each round starts, times and stops every variant's systems in turn, the order reversed every
other round so that none always goes first; each system's throughput is measured as section 1
of ``benchmarks.run`` measures it (``e2e.measure_throughput``). The table pairs every variant's
rounds with the baseline variant's rounds of the same system, so a machine that drifts between
rounds shifts both sides of a ratio alike.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

from benchmarks import e2e
from benchmarks.config import Sizes
from benchmarks.e2e import Throughput
from benchmarks.report import fmt, markdown_table
from benchmarks.systems import Driver

System = Callable[[], AbstractContextManager[list[Driver]]]


def measure(sizes: Sizes, variants: Mapping[str, Sequence[System]]) -> list[Throughput]:
    """Every system of every variant (its name: its systems), ``sizes.rounds`` times; rows
    named ``<variant>: <system>``."""
    names = list(variants)
    rows = []
    for number in range(1, sizes.rounds + 1):
        for variant in names if number % 2 else names[::-1]:
            for system in variants[variant]:
                with system() as drivers:
                    for driver in drivers:
                        row = e2e.measure_throughput(driver, sizes, number)
                        row.name = f"{variant}: {driver.name}"
                        rows.append(row)
                        print(f"round {number}: {row.name}: {row.rate:.1f} tasks/s",
                              file=sys.stderr, flush=True)  # fmt: skip
    return rows


def table(rows: list[Throughput], baseline: str, label: str) -> str:
    """A Markdown row per variant and system: tasks/s (median of the rounds, slowest and
    fastest), its rate over ``baseline``'s for the same system (the median of the rounds'
    ratios) and CPU ms a task (all; the client; the servers: broker and workers; Redis)."""
    found = e2e.by_system(rows)
    lines = []
    for name, rounds in found.items():
        system = name.split(": ", 1)[1]
        slowest, fastest = rounds.spread
        versus = e2e.paired_ratio(rounds, found.get(f"{baseline}: {system}"))
        lines.append([name, fmt(rounds.rate), f"{fmt(slowest)}-{fmt(fastest)}", f"{versus:.2f}",
                      *(f"{rounds.cpu_ms(part):.3f}"
                        for part in (None, "client", "servers", "redis"))])  # fmt: skip
    return markdown_table([f"{label}: system", "tasks/s", "rounds", f"x {baseline}",
                           "CPU ms/task", "client", "servers", "redis"], lines)  # fmt: skip
