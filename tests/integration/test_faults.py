"""Bad days, over real processes and real HTTP: workers that die, a broker stopped mid-request,
the embedded broker restarted, floods, huge bodies, and retention."""

from __future__ import annotations

import hashlib
import signal
import socket
import threading
import time
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
import requests

from client_sdk import Client, TaskFailed
from tests.conftest import connect_real_redis
from tests.integration.conftest import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    WORKER_TOKEN,
    Broker,
    launch_broker,
    stop_broker,
)
from tests.integration.test_end_to_end import wait_for

pytestmark = pytest.mark.redis
CLIENT_AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
WORKER_AUTH = {"Authorization": f"Bearer {WORKER_TOKEN}"}


class Supervisor:
    """Keeps `count` worker processes running, as systemd or Kubernetes would, and counts deaths."""

    def __init__(self, broker: Broker, count: int, *args: str) -> None:
        self.broker, self.args, self.deaths = broker, args, 0
        self.workers = [self._spawn(i) for i in range(count)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _spawn(self, index: int):
        return self.broker.spawn_worker(*self.args, worker_id=f"w{index}-{time.monotonic():.3f}")

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for index, process in enumerate(self.workers):
                if process.poll() is not None:
                    self.deaths += 1
                    self.workers[index] = self._spawn(index)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_poison_task_that_kills_its_worker_fails_and_the_queue_flows(real_redis, tmp_path):
    broker = launch_broker(tmp_path / "data")
    supervisor = None
    try:
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            poison = client.submit({"poison": True}, queue="p", max_attempts=3)
            healthy = [client.submit({"value": i}, queue="p") for i in range(30)]
            supervisor = Supervisor(broker, 2, "doomed", "--queue", "p", "--lease", "2")
            for i, task in enumerate(healthy):
                assert task.result(timeout=90) == {"value": 2 * i}
            with pytest.raises(TaskFailed) as failure:
                poison.result(timeout=90)
            doc = poison.info()
        assert (doc["status"], doc["attempts"]) == ("failed", 3)
        assert "lease expired" in failure.value.error
        assert "stopped heartbeating" in failure.value.error
        assert supervisor.deaths == 3  # once per attempt, then never again
    finally:
        if supervisor:
            supervisor.stop()
        stop_broker(broker)


def test_sigterm_answers_long_polls_at_once_and_finishes_requests_in_flight(real_redis, tmp_path):
    broker = launch_broker(tmp_path / "data")
    try:
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            waiting_on = client.submit(b"nobody takes this", queue="idle").id
        answers: dict[str, tuple[int, float]] = {}

        def long_poll(name, method, path):
            response = requests.request(method, broker.url + path, timeout=120,
                                        headers=WORKER_AUTH if "next" in path else CLIENT_AUTH)
            answers[name] = (response.status_code, time.monotonic())

        polls = [threading.Thread(target=long_poll, args=args) for args in (
            ("result", "GET", f"/getresult/{waiting_on}?wait=60"),
            ("take", "POST", "/getnexttask?queue=empty&wait=60"))]  # fmt: skip
        for thread in polls:
            thread.start()
        upload = _start_upload(broker.url, b"x" * 20_000, first=10_000)
        time.sleep(1.5)  # all three are inside the broker now
        broker.process.terminate()  # SIGTERM
        stopped_at = time.monotonic()
        time.sleep(0.5)
        status, body = _finish_upload(upload, b"x" * 10_000)
        for thread in polls:
            thread.join(timeout=30)
        broker.process.wait(timeout=30)
        exited_after = time.monotonic() - stopped_at
    finally:
        stop_broker(broker)
    assert status == 202  # the request in flight was finished, not cut
    assert answers["result"][0] == 202 and answers["take"][0] == 204
    assert max(t for _, t in answers.values()) - stopped_at < 10  # not after their 60 s wait
    assert exited_after < 15
    task_id = body.split(b'"task_id":"')[1].split(b'"')[0].decode()
    assert connect_real_redis().hget(f"inferbox:task:{task_id}", "status") == b"queued"


def test_ctrl_c_answers_long_polls_and_the_broker_exits_at_once(real_redis, tmp_path):
    """SIGINT (Ctrl-C) is gunicorn's quick stop: its workers get SIGQUIT and exit. A waiting
    long-poll must not hold a process until its own wait ends."""
    broker = launch_broker(tmp_path / "data")
    try:
        answers: list[int] = []
        poll = threading.Thread(target=lambda: answers.append(requests.post(
            broker.url + "/getnexttask?queue=empty&wait=60", headers=WORKER_AUTH,
            timeout=120).status_code))  # fmt: skip
        poll.start()
        time.sleep(1.5)  # the long-poll is inside the broker now
        broker.process.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        broker.process.wait(timeout=60)
        exited_after = time.monotonic() - stopped_at
        poll.join(timeout=30)
    finally:
        stop_broker(broker)
    assert exited_after < 10  # not after the long-poll's 60 s
    assert answers == [204]


def _start_upload(url: str, body: bytes, *, first: int) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (f"POST /predict?queue=up HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {CLIENT_TOKEN}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + body[:first])
    return sock


def _finish_upload(sock: socket.socket, rest: bytes) -> tuple[int, bytes]:
    sock.sendall(rest)
    answer = _read_response(sock)
    sock.close()
    return answer


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


def test_a_huge_body_is_refused_while_it_streams(real_redis, tmp_path):
    limit = 1024 * 1024
    broker = launch_broker(tmp_path / "data", MAX_PAYLOAD_BYTES=str(limit))
    try:
        status, sent = _stream_chunked(broker.url, total=10 * 1024**3)  # a 10 GB generator
        declared = _declared(broker.url, 10 * 1024**3)
        healthy = requests.get(f"{broker.url}/healthz", timeout=5).status_code
    finally:
        stop_broker(broker)
    assert status == 413
    assert sent < 32 * limit  # refused after about the limit (plus socket buffers), not 10 GB
    assert declared == 413  # a declared 10 GB is refused before a byte of it is read
    assert healthy == 200
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))


def _stream_chunked(url: str, total: int, chunk_size: int = 64 * 1024) -> tuple[int | None, int]:
    """Send a chunked POST /predict from a generator until the broker answers; (status, sent)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall((f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  f"Authorization: Bearer {CLIENT_TOKEN}\r\nTransfer-Encoding: chunked\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n").encode())  # fmt: skip
    chunks = (b"z" * chunk_size for _ in range(total // chunk_size))
    sent = 0
    with sock:
        for chunk in chunks:
            if socket_readable(sock):  # the broker answered before the body ended
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break  # it answered and closed; the answer may still be waiting to be read
            sent += len(chunk)
        try:
            return _read_response(sock)[0], sent
        except (ConnectionResetError, IndexError, ValueError):
            return None, sent


def socket_readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def _declared(url: str, size: int) -> int:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall((f"POST /predict HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Authorization: Bearer {CLIENT_TOKEN}\r\nContent-Length: {size}\r\n\r\n"
                      ).encode() + b"z" * 1000)  # fmt: skip
        return _read_response(sock)[0]


def test_the_embedded_broker_survives_a_restart(tmp_path):
    """Done-when 2: the embedded default (in-process Redis, ./inferbox-data), killed and
    started again, still serves every queued task and every finished result."""
    home = tmp_path / "home"
    home.mkdir()
    broker = launch_broker(Path(), cwd=home, embedded=True, STORAGE_URL="")
    try:
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            payloads = [f"payload {i}".encode() for i in range(30)]
            tasks = [client.submit(p, queue="sums") for p in payloads]
            worker = broker.spawn_worker("checksum", "--queue", "sums", "--max-tasks", "20",
                                         worker_id="before")  # fmt: skip
            worker.wait(timeout=60)
            canceled = client.submit(b"never mind", queue="sums")
            canceled.cancel()
            before = {t.id: t.info()["status"] for t in tasks}
        assert sorted(before.values()).count("succeeded") == 20
        broker.process.kill()  # SIGKILL: the in-process index dies with it
        broker.process.wait()
        broker = launch_broker(Path(), cwd=home, embedded=True, STORAGE_URL="")
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            after = {t.id: client.status(t.id)["status"] for t in tasks}
            assert after == before  # 20 succeeded, 10 queued, as they were
            assert client.status(canceled.id)["status"] == "canceled"
            for task, payload in zip(tasks, payloads, strict=True):
                if before[task.id] == "succeeded":  # every finished result is served
                    assert client.result(task.id, timeout=0) == {
                        "sha256": hashlib.sha256(payload).hexdigest()}
            broker.spawn_worker("checksum", "--queue", "sums", worker_id="after")
            for task, payload in zip(tasks, payloads, strict=True):  # every queued one runs
                assert client.result(task.id, timeout=60) == {
                    "sha256": hashlib.sha256(payload).hexdigest()}
    finally:
        stop_broker(broker)
    assert (home / "inferbox-data" / "inbox").is_dir()


def test_results_and_payloads_expire_after_a_short_retention(real_redis, tmp_path):
    broker = launch_broker(tmp_path / "data", RETENTION="2", JANITOR_INTERVAL="0.3")
    try:
        broker.spawn_worker("checksum", "--queue", "r", worker_id="w")
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            task = client.submit(b"short-lived", queue="r")
            assert task.result(timeout=30) == {"sha256": hashlib.sha256(b"short-lived").hexdigest()}
            assert (tmp_path / "data" / "outbox" / task.id).is_dir()
            wait_for(lambda: task.info()["status"] == "expired", timeout=30, what="retention")
            gone = requests.get(f"{broker.url}/getresult/{task.id}", headers=CLIENT_AUTH, timeout=5)
            assert gone.status_code == 410 and "retention" in gone.json()["error"]
    finally:
        stop_broker(broker)
    assert not (tmp_path / "data" / "outbox" / task.id).exists()
    assert not (tmp_path / "data" / "inbox" / task.id).exists()


def test_the_sdk_rides_out_a_submit_rate_limit(real_redis, tmp_path):
    broker = launch_broker(tmp_path / "data", SUBMIT_RATE="4", SUBMIT_BURST="2")
    sleeps: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        real_sleep(seconds)

    try:
        with Client(broker.url, token=CLIENT_TOKEN, retries=20) as client, \
                mock.patch("client_sdk.client.time.sleep", recording_sleep):  # fmt: skip
            ids = [client.submit(str(i).encode(), queue="flood").id for i in range(10)]
        stats = requests.get(f"{broker.url}/queues", timeout=5,
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    finally:
        stop_broker(broker)
    assert len(set(ids)) == 10 and stats["queues"][0]["depth"] == 10  # each once, none lost
    assert sleeps and set(sleeps) == {1.0}  # waited as long as each Retry-After said


def _cut_short(url: str, path: str, headers: dict[str, str], declared: int, sent: bytes) -> int:
    """Send a body shorter than its Content-Length, then end the stream (a client that dies
    mid-upload); the status of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}"
                      f"Content-Length: {declared}\r\n\r\n").encode() + sent)  # fmt: skip
        sock.shutdown(socket.SHUT_WR)
        return _read_response(sock)[0]


def test_a_body_cut_short_is_never_stored(real_redis, tmp_path):
    """gunicorn hands a body that ends before its Content-Length to the app as if complete;
    the broker must not store it as a (truncated) payload or result."""
    broker = launch_broker(tmp_path / "data")
    try:
        submit = _cut_short(broker.url, "/predict?queue=cut", CLIENT_AUTH, 1000, b"x" * 400)
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            task = client.submit(b"whole", queue="cut")
        taken = requests.post(f"{broker.url}/getnexttask?queue=cut", headers=WORKER_AUTH,
                              timeout=10)  # fmt: skip
        lease = taken.headers["X-Inferbox-Lease-Id"]
        result = _cut_short(broker.url, f"/puttaskresult/{task.id}",
                            {**WORKER_AUTH, "X-Inferbox-Lease-Id": lease}, 1000, b'{"half":')
        status = requests.get(f"{broker.url}/tasks/{task.id}", headers=CLIENT_AUTH,
                              timeout=10).json()["status"]  # fmt: skip
    finally:
        stop_broker(broker)
    assert (submit, result, status) == (400, 400, "running")
    assert sorted(p.name for p in (tmp_path / "data" / "inbox").iterdir()) == [task.id]
    assert not (tmp_path / "data" / "outbox").exists()
    assert real_redis.zcard("inferbox:queue:cut") == 0  # only the whole one, now running
