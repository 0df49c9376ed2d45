"""The offline edge box: ``inferbox-edge`` runs broker and workers on one machine on the embedded
default (no Redis, no object store, no network), supervises them, and keeps its queue on disk
across a restart of the whole box."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from client_sdk import Client
from tests.integration.conftest import ROOT, child_env, free_port

HANDLER = "tests.integration.handlers:slow"


class Edge:
    """One ``inferbox-edge`` process (its children in their own sessions, as it starts them)."""

    def __init__(self, data: Path, port: int, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "broker.edge", "--data", str(data), "--port", str(port),
                   "--queue", "edge", "--handler", HANDLER, "--log-level", "WARNING", *extra]
        self.process = subprocess.Popen(command, cwd=ROOT,
                                        env=child_env(INFERBOX_TEST_SLOW="1"))  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._healthy():
            assert self.process.poll() is None, f"inferbox-edge exited {self.process.returncode}"
            assert time.monotonic() < deadline, "the edge box did not start"
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)

    def power_cut(self) -> None:
        """Every process of the box killed at once, as a reboot or a power cut would."""
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            os.kill(pid, signal.SIGKILL)
        self.process.wait()


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture
def box(tmp_path) -> Iterator[tuple[Path, int]]:
    """Where a box keeps its data, and its port; any box still running is stopped after."""
    yield tmp_path / "data", free_port()


def test_the_edge_box_serves_restarts_a_dead_worker_and_stops_cleanly(box):
    data, port = box
    # Short long-polls and leases: a killed worker's take may still be pending on the broker
    # and lease the next task to nobody; it comes back after the lease (at least once).
    edge = Edge(data, port, "--", "--wait", "1", "--lease", "10")
    try:
        with Client(edge.url) as client:
            first = client.predict({"value": 1}, queue="edge", timeout=60)
            os.kill(first["pid"], signal.SIGKILL)  # the worker dies; the box starts another
            time.sleep(2)
            second = client.predict({"value": 2}, queue="edge", timeout=60)
        assert first["value"] == 1 and second["value"] == 2 and second["pid"] != first["pid"]
        assert (data / "inbox").is_dir()  # the payloads are files under --data
        children = descendants(edge.process.pid)
        assert len(children) >= 2  # the broker (and its gunicorn worker) and the worker
    finally:
        assert edge.stop() == 0
    assert not edge._healthy()
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]  # nothing left behind


@pytest.mark.parametrize("stop", ["sigterm", "power_cut"])
def test_queued_tasks_survive_a_restart_of_the_whole_box(box, stop):
    data, port = box
    edge = Edge(data, port)
    with Client(edge.url) as client:
        tasks = [client.submit({"value": i, "sleep": 0.4}, queue="edge") for i in range(12)]
        deadline = time.monotonic() + 60
        while sum(task.status() == "succeeded" for task in tasks) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        unfinished = sum(task.status() in ("queued", "running") for task in tasks)
    assert unfinished >= 5  # the box goes down with work in its queue
    if stop == "sigterm":
        assert edge.stop() == 0
    else:
        edge.power_cut()
    edge = Edge(data, port)  # the same data folder and port, as after a reboot
    try:
        with Client(edge.url) as client:
            results = [client.result(task.id, timeout=60) for task in tasks]
        assert [result["value"] for result in results] == list(range(12))
    finally:
        edge.stop()


def _netns_available() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not _netns_available(),
                    reason="needs unprivileged network namespaces (unshare -rn) and ip")
def test_the_edge_box_needs_no_network():
    """Inside a network namespace with nothing but loopback, the box still serves."""
    script = f"ip link set lo up && exec {sys.executable} -m tests.integration.edge_offline"
    done = subprocess.run(["unshare", "-rn", "sh", "-c", script], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["interfaces"] == ["lo"]
    assert report["answer"] == {"sha256": hashlib.sha256(b"no network needed").hexdigest()}
    assert report["exit"] == 0
