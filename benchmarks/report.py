"""Results as data, then as text: ratios, targets met or missed, tables, marker replacement.

Nothing here measures anything, so all of it is unit-tested (tests/unit/test_benchmark_report.py).
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib import metadata

PACKAGES = ("celery", "rq", "gunicorn", "flask", "redis", "requests", "psutil")
EXT4_SYS = "/sys/fs/ext4"  # one folder per mounted ext4 device, with its journal thread's name


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; NaN when either is missing (NaN) or the baseline is zero."""
    if math.isnan(value) or math.isnan(baseline) or baseline == 0:
        return math.nan
    return value / baseline


@dataclass(frozen=True)
class Check:
    """One target of issue 5: ``figure`` must be at least (``at_least``) or at most ``bound``."""

    target: str
    figure: float
    bound: float
    at_least: bool
    unit: str = "x"
    digits: int = 2  # decimals of the figure

    @property
    def met(self) -> bool:
        """Whether the figure meets the bound; a missing (NaN) figure never does."""
        if math.isnan(self.figure):
            return False
        return self.figure >= self.bound if self.at_least else self.figure <= self.bound

    @property
    def verdict(self) -> str:
        return "met" if self.met else "MISSED"

    def bound_text(self) -> str:
        bound = fmt(self.bound, 0 if float(self.bound).is_integer() else 2)
        return f"{'>=' if self.at_least else '<='} {bound}{self.unit}"

    def figure_text(self) -> str:
        return f"{fmt(self.figure, self.digits)}{self.unit}"


@dataclass
class Section:
    """One section's table (``columns`` and ``rows`` of text), notes and target checks."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None  # set when the section failed; its partial rows are kept


def fmt(value: float, digits: int = 2) -> str:
    """A number for a table: ``-`` for NaN, thousands separated, ``digits`` decimals below 100."""
    if math.isnan(value):
        return "-"
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A GitHub table; columns after the first are right-aligned (they hold figures)."""
    align = ["---"] + ["---:"] * (len(columns) - 1)
    lines = [_row(columns), _row(align), *(_row(row) for row in rows)]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def text_table(columns: list[str], rows: list[list[str]]) -> str:
    """A plain table for a terminal, every column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)) for row in [columns, *rows]]  # fmt: skip
    return "\n".join(lines)


def checks_table(sections: list[Section]) -> tuple[list[str], list[list[str]]]:
    columns = ["target", "bound", "measured", "verdict"]
    rows = [[check.target, check.bound_text(), check.figure_text(), check.verdict]
            for section in sections for check in section.checks]  # fmt: skip
    return columns, rows


def section_markdown(section: Section) -> str:
    parts = [f"### {section.title}", ""]
    if section.rows:
        parts += [markdown_table(section.columns, section.rows), ""]
    parts += [f"- {note}" for note in section.notes]
    if section.error:
        parts.append(f"- **The section failed:** {section.error}")
    return "\n".join(parts).rstrip() + "\n"


def section_text(section: Section) -> str:
    parts = [f"== {section.title}"]
    if section.rows:
        parts.append(text_table(section.columns, section.rows))
    if section.error:
        parts.append(f"FAILED: {section.error}")
    return "\n".join(parts)


def replace_between(text: str, start: str, end: str, body: str) -> str:
    """``text`` with what lies between the ``start`` and ``end`` marker lines replaced by
    ``body`` (markers kept); both markers appended at the end when ``start`` is absent.
    Raises ValueError when only one marker is present or they are out of order."""
    block = f"{start}\n{body.strip()}\n{end}"
    has_start, has_end = start in text, end in text
    if not has_start and not has_end:
        return text.rstrip() + "\n\n" + block + "\n"
    if has_start != has_end or text.index(start) > text.index(end):
        raise ValueError(f"markers {start!r} / {end!r} are unbalanced")
    head = text[: text.index(start)]
    tail = text[text.index(end) + len(end):]
    return head + block + tail


def machine() -> dict[str, str]:
    """What the figures were measured on: CPU, cores, memory, Python, package versions."""
    import psutil

    facts = {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "disk store's file system": file_system(tempfile.gettempdir()),
    }
    for name in PACKAGES:
        try:
            facts[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            facts[name] = "not installed"
    return facts


def file_system(path: str) -> str:
    """The type of the file system ``path`` is on, and for ext4 whether it keeps a journal
    (without one, file creates after many deletes cost far more: ``systems.scratch_dir``)."""
    import psutil

    path = os.path.realpath(path)
    mounts = [part for part in psutil.disk_partitions(all=True)
              if path == part.mountpoint or path.startswith(part.mountpoint.rstrip("/") + "/")]
    if not mounts:
        return "unknown"
    mount = max(mounts, key=lambda part: len(part.mountpoint))
    described = f"{mount.fstype} at {mount.mountpoint}"
    if mount.fstype == "ext4":
        try:
            with open(os.path.join(EXT4_SYS, os.path.basename(mount.device), "journal_task"),
                      encoding="ascii") as task:  # fmt: skip
                described += ", no journal" if task.read().strip() == "<none>" else ", journaled"
        except OSError:
            pass
    return described


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def results_markdown(sections: list[Section], facts: dict[str, str], command: str,
                     date: str, wall_seconds: float) -> str:
    """The whole ``run`` block of RESULTS.md."""
    columns, rows = checks_table(sections)
    lines = ["## One-command benchmark: inferbox vs Celery vs RQ", "",
             f"`{command}` on {date}, {wall_seconds / 60:.1f} minutes in all.", "",
             "Machine: " + "; ".join(f"{key} {value}" for key, value in facts.items()) + ".",
             "", "### Targets (issue 5)", "", markdown_table(columns, rows), ""]  # fmt: skip
    lines += [section_markdown(section) for section in sections]
    return "\n".join(lines)


def headline_markdown(sections: list[Section], date: str) -> str:
    """The short README table: every target with its figure and verdict."""
    columns, rows = checks_table(sections)
    return (f"Measured {date} on a 2-core machine by `python -m benchmarks.run --write` "
            "(full figures in [benchmarks/RESULTS.md](benchmarks/RESULTS.md)):\n\n"
            + markdown_table(columns, rows))
