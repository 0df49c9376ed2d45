"""The one-command benchmark of issue 5: inferbox against Celery and RQ on this machine.

    python -m benchmarks.run [--quick] [--only throughput,latency,...] [--write] [--profile]

Sections: throughput, latency, utilisation, payload, depth, longpoll, idle (see README
"Performance"). Every system runs against the same Redis (``INFERBOX_BENCH_REDIS_URL``,
default ``redis://127.0.0.1:6379/12``; the database is FLUSHED) with the same number of
worker processes and client threads (``benchmarks.config``). The table is printed;
``--write`` also writes ``benchmarks/RESULTS.md`` (between its ``run`` markers, other sections
kept) and the headline table of README.md. ``--profile`` samples the broker's stacks
(``benchmarks/sampler.py``, every thread each 5 ms) during the one-request-per-task
throughput run and writes ``benchmarks/PROFILE.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import config, profiling, report
from benchmarks.config import Sizes
from benchmarks.report import Section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
README = ROOT / "README.md"
PROFILE = ROOT / "benchmarks" / "PROFILE.md"
RUN_MARKERS = ("<!-- run: start -->", "<!-- run: end -->")
README_MARKERS = ("<!-- bench: start -->", "<!-- bench: end -->")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes: a ~2 minute smoke run")
    parser.add_argument("--only", type=sections_arg, default=list(config.SECTIONS),
                        help=f"comma-separated sections of: {', '.join(config.SECTIONS)}")
    parser.add_argument("--write", action="store_true",
                        help="write benchmarks/RESULTS.md and the README headline table")
    parser.add_argument("--profile", action="store_true",
                        help="sample the broker's stacks during throughput; writes "
                        "benchmarks/PROFILE.md")
    return parser.parse_args(argv)


def sections_arg(raw: str) -> list[str]:
    """The sections named in ``raw`` (comma-separated), in the benchmark's own order."""
    wanted = {name.strip() for name in raw.split(",") if name.strip()}
    unknown = wanted - set(config.SECTIONS)
    if unknown or not wanted:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from {', '.join(config.SECTIONS)}")
    return [name for name in config.SECTIONS if name in wanted]


def guarded(key: str, title: str, measure: Callable[[], list[Section]]) -> list[Section]:
    """The sections ``measure`` returns, or one failed section saying why (the run goes on)."""
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
        traceback.print_exc()
        return [Section(key, title, [], error=f"{type(exc).__name__}: {exc}")]


def end_to_end(sizes: Sizes, only: list[str], profile: bool) -> list[Section]:
    from benchmarks import e2e

    if profile:
        profiling.enable()
    rows = list(e2e.measure_all(sizes, "throughput" in only, "latency" in only, log))
    if profile:
        profiling.write_report(PROFILE)
        log(f"wrote {PROFILE.relative_to(ROOT)}")
    sections = []
    failures = [row for row in rows if isinstance(row, e2e.Failure)]
    if "throughput" in only:
        section = e2e.throughput_section([r for r in rows if isinstance(r, e2e.Throughput)],
                                         sizes)  # fmt: skip
        section.notes += e2e.failure_notes(failures, "throughput")
        if profile:
            how = ("under py-spy, sampling the broker from outside" if profiling.uses_py_spy()
                   else "with the stack sampler in the broker")  # fmt: skip
            section.notes.append("`--profile` was on: the inferbox submit + result row ran "
                                 f"{how}, which slows it.")
        sections.append(section)
    if "latency" in only:
        section = e2e.latency_section([r for r in rows if isinstance(r, e2e.Latency)], sizes)
        section.notes += e2e.failure_notes(failures, "latency")
        sections.append(section)
    return sections


def run_sections(sizes: Sizes, only: list[str], profile: bool) -> list[Section]:
    from benchmarks import depth, idle, longpoll, payload, utilisation

    sections: list[Section] = []
    if "throughput" in only or "latency" in only:
        sections += guarded("throughput", "1-2. Throughput and latency",
                            lambda: end_to_end(sizes, only, profile))  # fmt: skip
    steps: list[tuple[str, str, Callable[[], Section]]] = [
        ("utilisation", "3. Worker utilisation", lambda: utilisation.utilisation_section(sizes)),
        ("payload", "4. Large payload", lambda: payload.payload_section(sizes)),
        ("depth", "5. Take latency vs queue depth", lambda: depth.depth_section(sizes, log)),
        ("longpoll", "6. Long-poll scale", lambda: longpoll.longpoll_section(sizes)),
        ("idle", "7. Idle workers", lambda: idle.idle_section(sizes)),
    ]
    for key, title, measure in steps:
        if key in only:
            log(f"section: {title}")
            sections += guarded(key, title, lambda measure=measure: [measure()])  # type: ignore[misc]
    return sections


def print_report(sections: list[Section]) -> None:
    for section in sections:
        print(report.section_text(section), end="\n\n")
    columns, rows = report.checks_table(sections)
    print(report.text_table(columns, rows))


def write(sections: list[Section], command: str, wall_seconds: float) -> None:
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from benchmarks.systems import redis_client

    facts = report.machine()
    facts["Redis server"] = str(redis_client().info("server")["redis_version"])
    body = report.results_markdown(sections, facts, command, date, wall_seconds)
    RESULTS.write_text(report.replace_between(RESULTS.read_text(), *RUN_MARKERS, body))
    README.write_text(report.replace_between(README.read_text(), *README_MARKERS,
                                             report.headline_markdown(sections, date)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = config.QUICK if args.quick else config.FULL
    started = time.perf_counter()
    try:
        sections = run_sections(sizes, args.only, args.profile)
    finally:
        from benchmarks.systems import flush

        flush()  # leave nothing behind in the benchmark database
    wall = time.perf_counter() - started
    print_report(sections)
    print(f"\n{wall / 60:.1f} minutes in all")
    if args.write:
        command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
        write(sections, command.strip(), wall)
        log(f"wrote {RESULTS.relative_to(ROOT)} and the README headline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
