"""Section 4: one large binary payload submitted, echoed by a worker and fetched to a file."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import requests

from benchmarks import procs, systems
from benchmarks.config import PAYLOAD_TIMEOUT, REDIS_URL, SMALL_BROKER_THREADS, Sizes
from benchmarks.report import Check, Section, fmt
from benchmarks.stats import PeakRss

MB = 2**20
CHUNK = MB


def write_random(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` random bytes; their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for start in range(0, size, 8 * MB):
            block = os.urandom(min(8 * MB, size - start))
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def fetch_to_file(session: requests.Session, url: str, task_id: str, path: Path) -> str:
    """Long-poll ``GET /getresult`` until the result comes, streaming it into ``path``;
    the sha256 of what was written."""
    deadline = time.monotonic() + PAYLOAD_TIMEOUT
    while time.monotonic() < deadline:
        with session.get(f"{url}/getresult/{task_id}", params={"wait": 30}, stream=True,
                         timeout=PAYLOAD_TIMEOUT) as response:  # fmt: skip
            if response.status_code == 202:
                continue
            response.raise_for_status()
            digest = hashlib.sha256()
            with path.open("wb") as out:
                for block in response.iter_content(CHUNK):
                    digest.update(block)
                    out.write(block)
            return digest.hexdigest()
    raise TimeoutError(f"no result for {task_id} within {PAYLOAD_TIMEOUT} s")


def payload_section(sizes: Sizes) -> Section:
    from client_sdk import Client

    size = sizes.large_payload_mb * MB
    section = Section("payload", f"4. Large payload, {sizes.large_payload_mb} MB",
                      ["step", "seconds", "broker RSS growth MB", "worker RSS peak MB",
                       "client RSS growth MB"])  # fmt: skip
    systems.flush()
    with tempfile.TemporaryDirectory(prefix="inferbox-bench-") as scratch, \
            procs.Processes() as group:  # fmt: skip
        source, fetched = Path(scratch, "payload.bin"), Path(scratch, "fetched.bin")
        expected = write_random(source, size)
        url, broker = procs.start_broker(
            group, REDIS_URL, Path(scratch, "store").as_uri(), workers=1,
            threads=SMALL_BROKER_THREADS,
            INFERBOX_MAX_PAYLOAD_BYTES=str(size + 16 * MB))  # fmt: skip
        (worker,) = procs.start_workers(group, url, "large", "benchmarks.handlers:echo_bytes",
                                        1, "--lease", "300")  # fmt: skip
        time.sleep(2)  # the worker is up and long-polling before the clock starts
        broker_rss = PeakRss(lambda: procs.server_pids(broker))
        worker_rss = PeakRss(lambda: [worker.pid])
        client_rss = PeakRss(lambda: [os.getpid()])
        with broker_rss, worker_rss, client_rss, Client(url, timeout=PAYLOAD_TIMEOUT) as client:
            started = time.perf_counter()
            task = client.submit(source, queue="large")
            submitted = time.perf_counter() - started
            digest = fetch_to_file(client._session, url, task.id, fetched)
            total = time.perf_counter() - started
    if digest != expected:
        raise AssertionError("the fetched result's sha256 differs from the payload's")
    growth = broker_rss.growth / MB
    section.rows += [
        ["submit (SDK, `Path` payload)", fmt(submitted), "", "", ""],
        ["submit -> taken -> echoed -> fetched to a file", fmt(total), fmt(growth, 1),
         fmt(worker_rss.peak / MB, 1), fmt(client_rss.growth / MB, 1)],
    ]  # fmt: skip
    section.checks.append(Check(f"{sizes.large_payload_mb} MB payload: broker RSS growth",
                                growth, 50, False, " MB"))  # fmt: skip
    section.notes += [
        f"sha256 of the fetched file equals the payload's ({expected[:16]}...).",
        f"Broker: `inferbox-broker serve`, 1 process x {SMALL_BROKER_THREADS} threads, file:// "
        "storage; RSS of its gunicorn worker process sampled every 50 ms, growth = peak - "
        "value before the submit. "
        "One `inferbox-worker` (`benchmarks.handlers:echo_bytes`) returns the bytes unchanged; "
        "its peak RSS is absolute (the handler holds the payload and its result in memory).",
        "Client: `Client.submit(Path)` streams the file; the result is fetched with a streamed "
        "`GET /getresult` into a file.",
    ]
    return section
