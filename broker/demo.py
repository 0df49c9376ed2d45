"""``inferbox-demo``: the whole mailbox on one machine, with nothing else installed.

Starts a broker on the embedded default (in-process Redis, ``file://`` storage), a worker process
serving the bundled digits model, submits a few handwritten digits through the client SDK and
prints the answers. Then it leaves the broker and the worker running so a second terminal can
``curl`` them, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import requests

QUEUE = "digits"
HANDLER = "worker.examples.digits:predict"
SAMPLES = (0, 3, 4, 9, 12, 13, 18, 11)  # held-out digits: 6 2 5 1 0 4 3 9


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inferbox-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--samples", type=int, default=3, choices=range(1, len(SAMPLES) + 1),
                        help="digits to submit (1-8)")
    parser.add_argument("--no-wait", action="store_true", help="stop after the samples")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager stops it: clean up as on Ctrl-C
    url = f"http://127.0.0.1:{args.port}"
    children = [_start([sys.executable, "-m", "broker.cli", "--port", str(args.port)])]
    try:
        _wait_healthy(url, children[0])
        children.append(_start([sys.executable, "-m", "worker.cli", "--broker", url, "--queue",
                                QUEUE, "--handler", HANDLER, "--model-version", "digits-demo"]))
        _submit_samples(url, args.samples)
        _print_next_steps(url)
        if not args.no_wait:
            children[0].wait()
    except KeyboardInterrupt:
        print("\nstopping")
    except RuntimeError as exc:
        print(f"inferbox-demo: {exc}", file=sys.stderr)
        return 1
    finally:
        _stop(children)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_healthy(url: str, broker: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.poll() is not None:
            raise RuntimeError(f"the broker exited (code {broker.returncode}); is the port taken?")
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"the broker at {url} did not become healthy in {timeout:.0f} s")


def _submit_samples(url: str, count: int) -> None:
    from client_sdk import Client
    from worker.examples.digits import sample

    with Client(url) as client:
        for index in SAMPLES[:count]:
            payload, label = sample(index)
            task = client.submit(payload, queue=QUEUE)
            answer = task.result(timeout=60)
            print(f"task {task.id}: the model reads {answer['digit']} "
                  f"(confidence {answer['confidence']:.2f}); the true digit is {label}")


def _print_next_steps(url: str) -> None:
    from worker.examples.digits import sample

    body = json.dumps(sample(0)[0], separators=(",", ":"))
    print(f"""
The broker is up at {url} with a worker serving the '{QUEUE}' queue. In another terminal:

  curl -s -X POST '{url}/predict?queue={QUEUE}' -H 'Content-Type: application/json' \\
       -d '{body}'
  curl -s '{url}/getresult/<task_id>?wait=30'
  curl -s '{url}/queues'

Ctrl-C stops the broker and the worker.""", flush=True)


def _stop(children: list[subprocess.Popen]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    sys.exit(main())
