"""``--profile``: sample the broker during the one-request-per-task throughput run and
summarise the samples into ``benchmarks/PROFILE.md``.

Where py-spy is installed (``pip install py-spy``) and may read other processes' memory
(root, or ``kernel.yama.ptrace_scope`` 0), it profiles CPU: ``py-spy record --gil`` samples,
200 times a second, the stack of whichever thread of each gunicorn worker holds the GIL, only
while the timed runs last, so waits cost no samples. Otherwise the broker runs under
``benchmarks.sampler`` (wall-clock stacks of every thread of each gunicorn worker, every 5 ms,
only while the timed runs last); samples whose innermost frame is an idle wait (a pool thread
waiting for work, the accept loop, a long-poll waiting for its event) are counted apart, and
the tables rank the others.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.report import machine, markdown_table

IDLE_FILES = ("threading.py", "selectors.py", "queue.py")
PY_SPY_RATE = 200  # samples a second
_folder: Path | None = None
_py_spy: str | None = None  # the py-spy executable, when it profiles this run
_targets: Callable[[], list[int]] | None = None  # the processes py-spy attaches to
_runs = 0


def py_spy() -> str | None:
    """The py-spy executable, if it is installed and may attach to other processes here."""
    found = shutil.which("py-spy", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))  # fmt: skip
    if found is None:
        return None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return found
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return found  # no Yama: same-user processes may be traced
    return found if scope == "0" else None


def enable() -> Path:
    """Turn profiling on for this run; the folder the samples go to."""
    global _folder, _py_spy
    _folder = Path(tempfile.mkdtemp(prefix="inferbox-profile-"))
    _py_spy = py_spy()
    return _folder


def folder() -> Path | None:
    """Where the samples go, or None when profiling is off."""
    return _folder


def uses_py_spy() -> bool:
    """Whether py-spy profiles this run (else the broker runs under ``benchmarks.sampler``)."""
    return _py_spy is not None


def watch(pids: Callable[[], list[int]]) -> None:
    """The broker's server processes, for py-spy to attach to while ``sampling`` runs."""
    global _targets
    _targets = pids


@contextmanager
def sampling() -> Iterator[None]:
    """Samples are taken while the block runs (no-op when profiling is off)."""
    if _folder is None:
        yield
    elif _py_spy is not None:
        with _recording(_folder, _py_spy):
            yield
    else:
        switch = _folder / "on"
        switch.touch()
        try:
            yield
        finally:
            switch.unlink(missing_ok=True)


@contextmanager
def _recording(into: Path, executable: str) -> Iterator[None]:
    """``py-spy record --gil`` of every watched process while the block runs; Ctrl-C (SIGINT)
    makes each write its samples."""
    global _runs
    _runs += 1
    spies = [subprocess.Popen(
        [executable, "record", "--gil", "--nonblocking", "--rate", str(PY_SPY_RATE),
         "--format", "raw", "--output", str(into / f"{pid}-{_runs}.txt"), "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) for pid in (_targets() if _targets else [])]  # fmt: skip
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()


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


def rank(stacks: collections.Counter[tuple[str, ...]], top: int = 25,
         idle: Callable[[tuple[str, ...]], bool] = is_idle,
         ) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:  # fmt: skip
    """Busy samples, and the ``top`` frames by self samples (innermost frame, with its line)
    and functions by total samples (anywhere in the stack, once per sample; the threading
    module's own frames left out), ``idle`` stacks left out."""
    busy = {stack: n for stack, n in stacks.items() if not idle(stack)}
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
    if _py_spy is not None:
        path.write_text(_cpu_report(stacks))
        shutil.rmtree(_folder, ignore_errors=True)
        return
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


PACKAGES = (  # (what a sample's innermost frame is part of, the file path prefixes that say so)
    ("gunicorn: HTTP parsing and writing, its thread pool", ("gunicorn/",)),
    ("Flask and Werkzeug: routing, request and response objects", ("flask/", "werkzeug/")),
    ("redis-py: the Redis client", ("redis/",)),
    ("inferbox broker code", ("broker/",)),
    ("inferbox storage code", ("storage/",)),
    ("json", ("json/",)),
    ("threads: locks, events, the pool's queue, selectors",
     ("threading.py", "concurrent/", "queue.py", "selectors.py")),
    ("os and path calls", ("<frozen os>", "<frozen posixpath>", "<frozen genericpath>", "os.py")),
)


def by_package(stacks: collections.Counter[tuple[str, ...]]) -> list[tuple[str, int]]:
    """Samples by the package whose code was running (the innermost frame's file), most
    first; ``other`` last."""
    counts: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        where = _file(stack[-1])
        name = next((name for name, prefixes in PACKAGES
                     if any(where.startswith(prefix) for prefix in prefixes)), "other")
        counts[name] += count
    other = counts.pop("other", 0)
    return counts.most_common() + ([("other", other)] if other else [])


def _cpu_report(stacks: collections.Counter[tuple[str, ...]]) -> str:
    """PROFILE.md from py-spy's GIL samples: every sample is busy, none is set apart."""
    samples = sum(stacks.values())
    _, by_self, by_total = rank(stacks, idle=lambda stack: False)

    def table(rows: list[tuple[str, int]]) -> str:
        return markdown_table(["frame", "samples", "% of samples"],
                              [[f"`{frame}`", str(n), f"{100 * n / max(samples, 1):.1f}"]
                               for frame, n in rows])  # fmt: skip

    facts = machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        "# Broker CPU profile during the one-request-per-task throughput run", "",
        f"Written by `python -m benchmarks.run --profile` on {when} ({facts['CPU']}, "
        f"{facts['cores']} cores; see `benchmarks/profiling.py`): `py-spy record --gil`, "
        f"{PY_SPY_RATE} samples a second of each of the broker's gunicorn workers while the "
        "timed runs of `inferbox submit + result` lasted, each sample the Python stack of the "
        "thread holding the GIL (a process waiting on Redis, the disk or its clients is not "
        "sampled).", "",
        f"{samples:,} samples.", "",
        "## By package (the innermost frame's)", "",
        markdown_table(["package", "samples", "% of samples"],
                       [[name, str(n), f"{100 * n / max(samples, 1):.1f}"]
                        for name, n in by_package(stacks)]), "",
        "## Top frames by self samples (innermost frame)", "", table(by_self), "",
        "## Top functions by total samples (anywhere on the stack)", "", table(by_total), "",
    ])  # fmt: skip
