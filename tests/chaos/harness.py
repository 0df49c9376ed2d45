"""The chaos run: the whole mailbox on real processes, broken on purpose while clients submit.

It starts its own ``redis-server`` (AOF ``everysec``) on a free loopback port, the broker as a
gunicorn subprocess on that Redis and ``file://`` storage, worker processes (restarted by a
supervisor whenever they die) and client threads that submit continuously and read results.
As the submitted count passes fixed fractions of the target it SIGKILLs a random worker,
SIGKILLs and restarts the broker, SIGKILLs and restarts Redis, and once stops the broker,
wipes the index (FLUSHDB) and starts the broker again (which rebuilds the index from storage).
Then everything is left alone until every acknowledged task is final, and each one is checked:

- lost: an acknowledged task that is unknown or not final by the deadline;
- wrong: a succeeded task whose result is not the SHA-256 of its payload, or a task for which
  the clients saw two different results (or two different final states).

``python -m tests.chaos.harness [--long]`` runs it outside pytest and prints the summary line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import redis
import requests

from client_sdk import Client, InferboxError

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TOKEN, WORKER_TOKEN, ADMIN_TOKEN = "chaos-client", "chaos-worker", "chaos-admin"
FINAL = {"succeeded", "failed", "canceled", "expired"}


@dataclass(frozen=True)
class Profile:
    tasks: int  # acknowledged submits to reach
    worker_kills: int
    broker_kills: int  # plain kill-and-restart; the index wipe restarts the broker once more
    workers: int = 3
    submitters: int = 3
    readers: int = 3
    pace: float = 0.1  # seconds between two submits of one submitter: a steady flow
    drain_seconds: float = 240  # after the last submit, for every task to become final


SHORT = Profile(tasks=300, worker_kills=4, broker_kills=1)
LONG = Profile(tasks=3000, worker_kills=12, broker_kills=2, drain_seconds=600)


@dataclass
class Summary:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    redelivered: int = 0
    worker_kills: int = 0
    broker_kills: int = 0
    redis_restarts: int = 0
    index_wipes: int = 0
    lost: int = 0
    wrong: int = 0
    reopened: int = 0  # seen final, later seen unfinished (a Redis crash lost the last second)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"chaos: submitted={self.submitted} succeeded={self.succeeded} "
                f"failed={self.failed} redelivered={self.redelivered} "
                f"worker_kills={self.worker_kills} broker_kills={self.broker_kills} "
                f"redis_restarts={self.redis_restarts} index_wipes={self.index_wipes} "
                f"lost={self.lost} wrong={self.wrong} reopened={self.reopened} "
                f"seconds={self.seconds:.0f}")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, redis.RedisError, requests.RequestException):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


# -- the processes ------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server with the production persistence settings."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: redis.Redis(port=self.port, socket_timeout=1).ping(), 30, "redis")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class BrokerServer:
    """The broker (gunicorn, two processes) in its own process group, so a kill takes them all."""

    def __init__(self, redis_url: str, data: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
            "INFERBOX_REDIS_URL": redis_url, "INFERBOX_STORAGE_URL": data.as_uri(),
            "INFERBOX_CLIENT_TOKENS": CLIENT_TOKEN, "INFERBOX_WORKER_TOKENS": WORKER_TOKEN,
            "INFERBOX_ADMIN_TOKENS": ADMIN_TOKEN, "INFERBOX_WORKERS": "2",
            "INFERBOX_THREADS": "32", "INFERBOX_MAX_WAIT": "5",
            "INFERBOX_DEFAULT_MAX_ATTEMPTS": "50", "INFERBOX_JANITOR_INTERVAL": "1",
            "INFERBOX_RECONCILE_INTERVAL": "5", "INFERBOX_RECONCILE_GRACE": "3",
        }  # fmt: skip
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "broker.cli", "--port", str(self.port), "--log-level",
                 "WARNING"], cwd=ROOT, env=self.env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        wait_for(self._healthy, 120, "the broker")

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"the broker exited with {self.process.returncode}; see {self.log}")
        return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class Workers:
    """`count` worker processes, each restarted as soon as it dies (as systemd would)."""

    def __init__(self, url: str, count: int, log: Path) -> None:
        self.url, self.log = url, log
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.ids = [""] * count
        self.processes = [self._spawn(i) for i in range(count)]
        self.kills = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _spawn(self, index: int) -> subprocess.Popen:
        self.ids[index] = f"chaos-{index}-{time.monotonic_ns()}"
        with open(self.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "--broker", self.url, "--token",
                 WORKER_TOKEN, "--queue", "chaos", "--handler", "tests.chaos.handlers:checksum",
                 "--lease", "3", "--wait", "2", "--worker-id", self.ids[index],
                 "--log-level", "WARNING"],
                cwd=ROOT, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip

    def _supervise(self) -> None:
        while not self._stop.wait(0.3):
            with self._lock:
                for index, process in enumerate(self.processes):
                    if process.poll() is not None:
                        self.processes[index] = self._spawn(index)

    def kill_one(self, rng: random.Random, busy: list[str]) -> None:
        """SIGKILL a worker: one holding a task (``busy``: worker ids) if any, else any."""
        with self._lock:
            alive = [i for i, p in enumerate(self.processes) if p.poll() is None]
            holding = [i for i in alive if self.ids[i] in busy]
            victim = self.processes[rng.choice(holding or alive)]
            victim.kill()  # no goodbye: its lease just runs out
            victim.wait()
            self.kills += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


# -- the clients --------------------------------------------------------------------------------


class Ledger:
    """What the clients were told: acknowledged tasks, their expected results, what was seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: dict[str, str] = {}  # task id -> sha256 of the payload
        self.seen: dict[str, set[str]] = defaultdict(set)  # task id -> final outcomes seen
        self.reopened: set[str] = set()
        self.pending: list[str] = []

    def acknowledge(self, task_id: str, digest: str) -> None:
        with self.lock:
            if task_id not in self.expected:  # an idempotent replay names the same task
                self.expected[task_id] = digest
                self.pending.append(task_id)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.expected)

    def observe(self, task_id: str, response: requests.Response) -> bool:
        """Record one answer of GET /getresult; True when it was final."""
        if response.status_code == 200:
            outcome = "result:" + hashlib.sha256(response.content).hexdigest()
        elif response.status_code in (409, 410, 424):
            outcome = "status:" + response.json()["status"]
        else:
            if response.status_code == 202:
                with self.lock:
                    if self.seen.get(task_id):
                        self.reopened.add(task_id)
            return False
        with self.lock:
            self.seen[task_id].add(outcome)
        return True


def submitter(url: str, ledger: Ledger, target: int, stop: threading.Event, seed: int,
              pace: float) -> None:  # fmt: skip
    rng = random.Random(seed)
    with Client(url, token=CLIENT_TOKEN, retries=0, timeout=10) as client:
        while not stop.is_set() and ledger.count < target:
            payload = rng.randbytes(rng.randint(0, 2048))
            key = f"chaos-{seed}-{rng.getrandbits(64):x}"
            while not stop.is_set():
                try:
                    task = client.submit(payload, queue="chaos", idempotency_key=key)
                except InferboxError:
                    time.sleep(rng.uniform(0.2, 0.5))  # the broker or Redis is away: retry
                    continue
                ledger.acknowledge(task.id, hashlib.sha256(payload).hexdigest())
                break
            stop.wait(pace)


def reader(url: str, ledger: Ledger, stop: threading.Event) -> None:
    """Long-poll results of pending tasks, as the apps waiting for them would."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {CLIENT_TOKEN}"
    while not stop.is_set():
        with ledger.lock:
            task_id = ledger.pending.pop(0) if ledger.pending else None
        if task_id is None:
            time.sleep(0.05)
            continue
        try:
            response = session.get(f"{url}/getresult/{task_id}", params={"wait": 5}, timeout=15)
            final = ledger.observe(task_id, response)
        except (requests.RequestException, ValueError):
            final = False
        if not final:
            with ledger.lock:
                ledger.pending.append(task_id)


def recheck(url: str, ledger: Ledger, sample: int, rng: random.Random) -> None:
    """Read some finished tasks again (after a fault): their answer must not have changed."""
    with ledger.lock:
        done = [task_id for task_id, outcomes in ledger.seen.items() if outcomes]
    for task_id in rng.sample(done, min(sample, len(done))):
        try:
            response = requests.get(f"{url}/getresult/{task_id}", timeout=10,
                                    headers={"Authorization": f"Bearer {CLIENT_TOKEN}"})
            ledger.observe(task_id, response)
        except (requests.RequestException, ValueError):
            pass


# -- the run ------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, profile: Profile, workdir: Path, seed: int = 4) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.workdir = workdir
        (workdir / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(workdir / "redis")
        self.broker = BrokerServer(self.redis.url, workdir / "data", workdir / "broker.log")
        self.ledger = Ledger()
        self.summary = Summary()

    def plan(self) -> list[tuple[float, str]]:
        """(fraction of the target submitted, fault), in order."""
        p = self.profile
        kills = [(0.05 + 0.85 * (i + 0.5) / p.worker_kills, "worker")
                 for i in range(p.worker_kills)]  # fmt: skip
        brokers = [(0.2 + 0.45 * i / max(1, p.broker_kills - 1), "broker")
                   for i in range(p.broker_kills)]  # fmt: skip
        return sorted([*kills, *brokers, (0.45, "redis"), (0.8, "wipe")])

    def run(self) -> Summary:
        started = time.monotonic()
        with self._processes() as workers:
            stop = threading.Event()
            threads = [threading.Thread(target=submitter, daemon=True, args=(
                self.broker.url, self.ledger, self.profile.tasks, stop, seed, self.profile.pace))
                for seed in range(self.profile.submitters)]  # fmt: skip
            threads += [threading.Thread(target=reader, args=(self.broker.url, self.ledger, stop),
                                         daemon=True) for _ in range(self.profile.readers)]
            for thread in threads:
                thread.start()
            try:
                self._inflict(workers)
                for thread in threads[: self.profile.submitters]:
                    thread.join()
                self._drain()
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
            self.summary.worker_kills = workers.kills
            self._verify()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    @contextmanager
    def _processes(self) -> Iterator[Workers]:
        workers = None
        try:
            self.redis.start()
            self.broker.start()
            workers = Workers(self.broker.url, self.profile.workers, self.workdir / "workers.log")
            yield workers
        finally:
            if workers:
                workers.stop()
            self.broker.stop()
            self.redis.kill()

    def _inflict(self, workers: Workers) -> None:
        for fraction, fault in self.plan():
            wait_for(lambda f=fraction: self.ledger.count >= f * self.profile.tasks, 900,
                     f"{fraction:.0%} of the submits")  # fmt: skip
            if fault == "worker":
                workers.kill_one(self.rng, self._busy_workers())
            elif fault == "broker":
                self.broker.kill()
                self.summary.broker_kills += 1
                time.sleep(self.rng.uniform(0.2, 1.0))
                self.broker.start()
            elif fault == "redis":
                self.redis.kill()  # a crash: whatever the AOF had not fsynced is gone
                self.summary.redis_restarts += 1
                time.sleep(self.rng.uniform(0.5, 1.5))
                self.redis.start()
            elif fault == "wipe":
                self.broker.kill()
                self.summary.broker_kills += 1
                self.redis.client().flushdb()  # the index is lost; storage is not
                self.summary.index_wipes += 1
                self.broker.start()  # an empty index over a full store: rebuilt at start
            if fault != "worker":
                recheck(self.broker.url, self.ledger, 100, self.rng)

    def _busy_workers(self) -> list[str]:
        """The workers holding a task now, from the index."""
        client = self.redis.client()
        running = cast(list[bytes], client.zrange("inferbox:running:chaos", 0, -1))
        ids = [cast(bytes | None, client.hget(f"inferbox:task:{task_id.decode()}", "worker_id"))
               for task_id in running]  # fmt: skip
        return [worker.decode() for worker in ids if worker]

    def _drain(self) -> None:
        deadline = time.monotonic() + self.profile.drain_seconds
        while time.monotonic() < deadline:
            with self.ledger.lock:
                if not self.ledger.pending:
                    return
            time.sleep(0.5)

    def _verify(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        statuses: Counter[str] = Counter()
        for task_id, digest in sorted(self.ledger.expected.items()):
            doc = session.get(f"{self.broker.url}/tasks/{task_id}", timeout=10)
            if doc.status_code != 200 or doc.json()["status"] not in FINAL:
                self._problem("lost", f"{task_id}: {doc.status_code} {doc.text[:200]}")
                continue
            status = doc.json()["status"]
            statuses[status] += 1
            self.summary.redelivered += doc.json()["attempts"] > 1
            answer = session.get(f"{self.broker.url}/getresult/{task_id}", timeout=10)
            self.ledger.observe(task_id, answer)
            outcomes = self.ledger.seen[task_id]
            expected = b'{"sha256":"%s"}' % digest.encode()
            if status == "succeeded" and answer.content.replace(b" ", b"").strip() != expected:
                self._problem("wrong", f"{task_id}: {answer.status_code} {answer.headers} "
                                       f"{answer.content[:200]!r} for {digest}")  # fmt: skip
            elif len(outcomes) > 1:
                self._problem("wrong", f"{task_id}: clients saw {sorted(outcomes)}")
        self.summary.submitted = len(self.ledger.expected)
        self.summary.succeeded, self.summary.failed = statuses["succeeded"], statuses["failed"]
        self.summary.reopened = len(self.ledger.reopened)

    def _problem(self, kind: str, detail: str) -> None:
        setattr(self.summary, kind, getattr(self.summary, kind) + 1)
        self.summary.problems.append(f"{kind}: {detail}")


def redis_server_available() -> bool:
    return shutil.which("redis-server") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the long run (3,000 tasks)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="inferbox-chaos-")
    try:
        summary = Chaos(LONG if args.long else SHORT, Path(workdir), args.seed).run()
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary.line())
    for problem in summary.problems[:20]:
        print("  " + problem)
    return 0 if summary.lost == summary.wrong == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
