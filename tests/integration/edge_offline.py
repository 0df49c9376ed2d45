"""An edge box on a machine with no network: run by tests/integration/test_edge.py inside a
network namespace that has only the loopback interface (``unshare -rn``).

Starts ``inferbox-edge`` on the embedded default, has it answer one task through the client SDK,
stops it, and prints a JSON line: the interfaces it could see, the answer, the exit status.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

from client_sdk import Client


def main() -> None:
    interfaces = sorted(name for _, name in socket.if_nameindex())
    with tempfile.TemporaryDirectory() as data:
        edge = subprocess.Popen([sys.executable, "-m", "broker.edge", "--port", "8000",
                                 "--data", data, "--queue", "offline", "--handler",
                                 "tests.integration.handlers:checksum", "--log-level",
                                 "WARNING", "--", "--wait", "2"])  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get("http://127.0.0.1:8000/healthz", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline or edge.poll() is not None:
                    raise SystemExit("the edge box did not start")
                time.sleep(0.2)
            with Client("http://127.0.0.1:8000") as client:
                answer = client.predict(b"no network needed", queue="offline", timeout=60)
        finally:
            edge.send_signal(signal.SIGTERM)
            status = edge.wait(timeout=60)
    print(json.dumps({"interfaces": interfaces, "answer": answer, "exit": status}))


if __name__ == "__main__":
    main()
