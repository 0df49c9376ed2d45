"""``inferbox-edge``: what it starts, with which settings, and the systemd unit that runs it."""

from __future__ import annotations

import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from broker.edge import Box, parse_args, run
from broker.errors import SettingsError

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "examples" / "edge" / "inferbox-edge.service"


def plan(argv: list[str], environ: dict[str, str] | None = None) -> Box:
    args, extra = parse_args(argv)
    return Box.plan(args, extra, environ or {})


def test_a_box_is_a_broker_on_loopback_and_workers_pointed_at_it(tmp_path):
    box = plan(["--data", str(tmp_path), "--port", "8123", "--queue", "digits", "--handler",
                "pkg.model:predict", "--workers", "2", "--", "--batch-size", "8"])
    assert box.url == "http://127.0.0.1:8123" and box.workers == 2
    assert box.broker_env["INFERBOX_STORAGE_URL"] == tmp_path.resolve().as_uri()
    assert box.broker_env["INFERBOX_PORT"] == "8123" and "INFERBOX_REDIS_URL" not in box.broker_env
    assert box.worker[box.worker.index("--broker") + 1] == box.url
    assert box.worker[-6:] == ["--queue", "digits", "--handler", "pkg.model:predict",
                               "--batch-size", "8"]  # fmt: skip


def test_the_workers_get_a_worker_token(tmp_path):
    environ = {"INFERBOX_CLIENT_TOKENS": "c", "INFERBOX_WORKER_TOKENS": "w1,w2"}
    box = plan(["--handler", "m:f"], environ)
    assert box.worker_env["INFERBOX_TOKEN"] == "w1"
    box = plan(["--handler", "m:f"], {**environ, "INFERBOX_TOKEN": "mine"})
    assert box.worker_env["INFERBOX_TOKEN"] == "mine"
    with pytest.raises(SettingsError, match="INFERBOX_TOKEN"):
        plan(["--handler", "m:f"], {"INFERBOX_CLIENT_TOKENS": "c"})


def test_the_workers_must_be_told_what_to_run():
    with pytest.raises(SettingsError, match="--handler"):
        plan([])
    assert "--keras" in plan(["--", "--keras", "m.keras"]).worker
    assert "env:f" in plan([], {"INFERBOX_HANDLER": "env:f"}).worker


def test_bad_settings_are_refused_before_anything_starts():
    with pytest.raises(SettingsError):
        plan(["--handler", "m:f"], {"INFERBOX_MAX_WAIT": "soon"})
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: section -> key -> values (a key may repeat, as Environment= does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_systemd_unit_runs_the_edge_command_with_options_it_accepts():
    unit = read_unit(UNIT)
    service = {key: values[-1] for key, values in unit["Service"].items()}
    program, *argv = shlex.split(service["ExecStart"])
    assert Path(program).name == "inferbox-edge"
    assert 'inferbox-edge = "broker.edge:main"' in (ROOT / "pyproject.toml").read_text()
    environ = dict(item.split("=", 1) for line in unit["Service"]["Environment"]
                   for item in shlex.split(line))  # fmt: skip
    box = plan(argv, environ)
    assert box.broker_env["INFERBOX_STORAGE_URL"] == "file:///var/lib/inferbox"
    assert box.worker_env["INFERBOX_TOKEN"] == environ["INFERBOX_WORKER_TOKENS"]
    assert service["Restart"] == "always" and service["KillMode"] == "mixed"
    assert service["StateDirectory"] == "inferbox"
    assert "network-online.target" not in unit["Unit"].get("After", [""])[0]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


BROKER_STANDIN = """
import http.server, sys
class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Healthy).serve_forever()
"""
WORKER_STANDIN = """
import os, sys, time
open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
time.sleep(0.3 if len(os.listdir(sys.argv[1])) < 2 else 60)  # the first one dies young
"""


def test_the_box_restarts_a_dead_worker_and_stops_everything_it_started(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    box = Box(broker=[sys.executable, "-c", BROKER_STANDIN, str(port)],
              worker=[sys.executable, "-c", WORKER_STANDIN, str(tmp_path)], broker_env={},
              worker_env={}, url=f"http://127.0.0.1:{port}", workers=1)  # fmt: skip
    stopping = threading.Event()
    outcome: list[int] = []
    runner = threading.Thread(target=lambda: outcome.append(run(box, stopping)))
    runner.start()
    deadline = time.monotonic() + 30
    while len(list(tmp_path.iterdir())) < 2:  # started, died, started again
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stopping.set()
    runner.join(60)
    assert outcome == [0]
    pids = [int(path.name) for path in tmp_path.iterdir()]
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the broker is gone too
