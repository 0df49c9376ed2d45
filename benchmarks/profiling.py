"""``--profile``: sample the broker during the one-request-per-task throughput run and
summarise the samples into ``benchmarks/PROFILE.md``.

The broker then runs under ``benchmarks.sampler`` (wall-clock stacks of every thread of each
gunicorn worker, every 5 ms, only while the timed run lasts). Samples whose innermost frame
is an idle wait (a pool thread waiting for work, the accept loop, a long-poll waiting for its
event) are counted apart; the tables rank the others.
"""

from __future__ import annotations

import collections
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.report import markdown_table

IDLE_FILES = ("threading.py", "selectors.py", "queue.py")
_folder: Path | None = None


def enable() -> Path:
    """Turn profiling on for this run; the folder the sampler writes to."""
    global _folder
    _folder = Path(tempfile.mkdtemp(prefix="inferbox-profile-"))
    return _folder


def folder() -> Path | None:
    """Where the sampler writes, or None when profiling is off."""
    return _folder


@contextmanager
def sampling() -> Iterator[None]:
    """Samples are taken while the block runs (no-op when profiling is off)."""
    if _folder is None:
        yield
        return
    switch = _folder / "on"
    switch.touch()
    try:
        yield
    finally:
        switch.unlink(missing_ok=True)


def parse(lines: Iterable[str]) -> collections.Counter[tuple[str, ...]]:
    """Collapsed stacks (``a;b;c 12`` lines) as a Counter of frame tuples, root first."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _file(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].split(":", 1)[0]


def _function(frame: str) -> str:
    """``name (file)``: the frame without its line number."""
    return frame.rsplit(":", 1)[0] + ")" if ":" in frame else frame


def is_idle(stack: tuple[str, ...]) -> bool:
    """Whether the thread was waiting for work: a lock or event, a selector, an empty work
    queue (``concurrent.futures`` pool threads), or the notifier's subscription read."""
    leaf = stack[-1]
    if _file(leaf) in IDLE_FILES or _function(leaf) == "_worker (thread.py)":
        return True
    return any(_function(frame) == "_listen (notify.py)" for frame in stack)


def rank(stacks: collections.Counter[tuple[str, ...]],
         top: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Busy samples, and the ``top`` frames by self samples (innermost frame, with its line)
    and functions by total samples (anywhere in the stack, once per sample; the threading
    module's own frames left out), idle stacks left out."""
    busy = {stack: n for stack, n in stacks.items() if not is_idle(stack)}
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    for stack, count in busy.items():
        self_counts[stack[-1]] += count
        for function in {_function(frame) for frame in stack if _file(frame) not in IDLE_FILES}:
            total_counts[function] += count
    return sum(busy.values()), self_counts.most_common(top), total_counts.most_common(top)


def write_report(path: Path) -> None:
    """Summarise every sample file of this run into ``path`` (markdown)."""
    if _folder is None:
        return
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for sample_file in _folder.glob("*.txt"):
        stacks.update(parse(sample_file.read_text().splitlines()))
    busy, by_self, by_total = rank(stacks)
    everything = sum(stacks.values())

    def table(rows: list[tuple[str, int]]) -> str:
        return markdown_table(["frame", "samples", "% of busy"],
                              [[f"`{frame}`", str(n), f"{100 * n / max(busy, 1):.1f}"]
                               for frame, n in rows])  # fmt: skip

    path.write_text("\n".join([
        "# Broker profile during the one-request-per-task throughput run", "",
        "Written by `python -m benchmarks.run --profile` (see `benchmarks/profiling.py`): "
        "wall-clock Python stacks of every thread of the broker's gunicorn workers, sampled "
        "every 5 ms while the timed run lasted.", "",
        f"{everything:,} thread samples, {busy:,} busy (the rest were idle waits: a pool "
        "thread waiting for work, the accept loop, a long-poll waiting for its event). "
        "A busy sample may still be waiting on Redis or the disk.", "",
        "## Top frames by self samples (innermost frame)", "", table(by_self), "",
        "## Top functions by total samples (anywhere on the stack)", "", table(by_total), "",
    ]))  # fmt: skip
    shutil.rmtree(_folder, ignore_errors=True)
