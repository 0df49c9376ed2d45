"""The broker with a wall-clock stack sampler in each server process (``--profile``).

    INFERBOX_BENCH_PROFILE_DIR=/tmp/x python -m benchmarks.sampler serve --port 8123

Runs ``broker.cli.main`` unchanged; every process forked from it (gunicorn's workers) starts
a daemon thread that, while the file ``<dir>/on`` exists, records the Python stack of every
other thread every ``INTERVAL`` seconds and rewrites ``<dir>/<pid>.txt`` once a second as
collapsed stacks (``root;...;leaf count``). py-spy does the same from outside the process
where the kernel lets it read another process's memory; this needs nothing but Python.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL = 0.005
FLUSH_EVERY = 1.0


def stack_of(frame: FrameType | None) -> str:
    """``func (file:line);...`` from the outermost frame to ``frame``."""
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{code.co_name} ({Path(code.co_filename).name}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join(reversed(names))


class Sampler(threading.Thread):
    def __init__(self, folder: Path) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.folder = folder
        self.counts: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        switch, output = self.folder / "on", self.folder / f"{os.getpid()}.txt"
        flushed = time.monotonic()
        while True:
            time.sleep(INTERVAL)
            if not switch.exists():
                time.sleep(0.1)
                continue
            own = threading.get_ident()
            for ident, frame in sys._current_frames().items():
                if ident != own:
                    self.counts[stack_of(frame)] += 1
            if time.monotonic() - flushed >= FLUSH_EVERY:
                flushed = time.monotonic()
                lines = (f"{stack} {count}\n" for stack, count in self.counts.items())
                output.write_text("".join(lines))


def main() -> int:
    from broker.cli import main as broker_main

    folder = Path(os.environ["INFERBOX_BENCH_PROFILE_DIR"])
    os.register_at_fork(after_in_child=lambda: Sampler(folder).start())
    return broker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
