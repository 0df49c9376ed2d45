"""Section 7: what one task costs Redis while many idle workers long-poll one broker process.

Idle workers are threads of this process, each holding ``POST /getnexttask?wait=60`` on its own
``http.client`` connection, as an ``inferbox-worker`` with nothing to do does; they start spread
over a second, as workers started at different times would be. First the idle cost is read
(Redis scripts a second: the broker process re-reads the queue once a second for its waiting
takes, in case a notice was lost), then tasks are submitted one at a time, each once the one
before was taken: the Redis scripts and Redis CPU they cost, and how soon a waiting take
answered.
"""

from __future__ import annotations

import http.client
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from benchmarks import procs, systems
from benchmarks.config import REDIS_URL, Sizes
from benchmarks.longpoll import broker_sockets
from benchmarks.report import Section, fmt
from benchmarks.stats import percentile, redis_cpu_seconds

WAIT = 60
IDLE_SECONDS = 3.0  # how long the idle cost is read over
QUEUE = "idle"


@dataclass
class Taker:
    number: int
    task_id: str = ""
    answered: float = 0.0


def hold_take(taker: Taker, host: str, port: int) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=WAIT + 60)
    try:
        connection.request("POST", f"/getnexttask?queue={QUEUE}&wait={WAIT}"
                                   f"&worker_id=idle-{taker.number}")  # fmt: skip
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            taker.task_id = response.getheader("X-Inferbox-Task-Id") or ""
            taker.answered = time.perf_counter()
    except OSError:
        pass  # the broker stopped while it waited: nothing to count
    finally:
        connection.close()


def scripts_run(client: redis.Redis) -> int:
    """Lua scripts the Redis server has run since it started (all databases, all clients)."""
    stats = client.info("commandstats")
    return sum(int(stat["calls"]) for name, stat in stats.items()
               if name.startswith(("cmdstat_eval", "cmdstat_fcall")))  # fmt: skip


def idle_section(sizes: Sizes) -> Section:
    from client_sdk import Client

    count, tasks = sizes.idle_workers, sizes.idle_tasks
    section = Section("idle", f"7. Idle workers: one task's cost with {count:,} takes waiting",
                      ["idle workers", "tasks", "scripts/task", "of them rechecks",
                       "Redis CPU ms/task", "idle scripts/s", "take answer p50 ms",
                       "p99 ms"])  # fmt: skip
    redis_client = systems.flush()
    with tempfile.TemporaryDirectory(prefix="inferbox-bench-") as scratch, \
            procs.Processes() as group:  # fmt: skip
        url, broker = procs.start_broker(group, REDIS_URL, Path(scratch).as_uri(), workers=1,
                                         threads=count + 50)  # fmt: skip
        (pid,) = procs.server_pids(broker)
        parts = urlsplit(url)
        takers = [Taker(number) for number in range(count)]
        for taker in takers:  # started over a second, as workers would
            threading.Thread(target=hold_take, args=(taker, parts.hostname, parts.port),
                             daemon=True).start()  # fmt: skip
            time.sleep(1.0 / count)
        deadline = time.monotonic() + 30
        while broker_sockets(pid, parts.port or 80)[0] < count and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # every take has looked once and waits
        before, started = scripts_run(redis_client), time.perf_counter()
        time.sleep(IDLE_SECONDS)
        idle_rate = (scripts_run(redis_client) - before) / (time.perf_counter() - started)
        submitted: dict[str, float] = {}
        with Client(url) as client:
            scripts, cpu = scripts_run(redis_client), redis_cpu_seconds(redis_client)
            started = time.perf_counter()
            for number in range(tasks):
                task = client.submit({"i": number}, queue=QUEUE)
                submitted[task.id] = time.perf_counter()
                wait_until = time.monotonic() + 10
                while (sum(1 for t in takers if t.task_id) <= number
                       and time.monotonic() < wait_until):  # fmt: skip
                    time.sleep(0.002)
            elapsed = time.perf_counter() - started
            scripts = scripts_run(redis_client) - scripts
            cpu = redis_cpu_seconds(redis_client) - cpu
    answers = [1000 * (t.answered - submitted[t.task_id]) for t in takers
               if t.task_id in submitted]  # fmt: skip
    rechecks = idle_rate * elapsed
    section.rows.append([f"{count:,}", f"{len(answers)} of {tasks}", fmt(scripts / tasks),
                         fmt(rechecks / tasks), fmt(1000 * cpu / tasks, 3), fmt(idle_rate, 0),
                         fmt(statistics.median(answers) if answers else float("nan")),
                         fmt(percentile(answers, 0.99))])  # fmt: skip
    section.notes += [
        f"Broker: `inferbox-broker serve`, 1 gunicorn process (gthread) x {count + 50} threads, "
        f"file:// storage. Idle workers: {count:,} threads of the benchmark process, each "
        f"holding `POST /getnexttask?queue={QUEUE}&wait={WAIT}` on its own connection; a take "
        "that gets a task ends (it does not poll again), so every task goes to a different "
        "worker.",
        f"Tasks: `Client.submit`, one at a time, each once the one before was taken. "
        "scripts/task: the Lua scripts Redis ran while they went (`INFO commandstats`), per "
        "task: the submit, the take that got it, any take woken in vain, and the broker's "
        "once-a-second rechecks of the queue, whose share (`of them rechecks`) is the idle rate "
        f"read over {IDLE_SECONDS:.0f} s before, times the time the tasks took. Redis CPU: "
        "`INFO cpu` over the same time, per task. take answer: from the submit's return to the "
        "taker's answer.",
        "Before a queued task woke only one waiting take per broker process, it woke them "
        "all. This section, run on the code before that change on the same machine the same "
        "night, with 200 idle workers: 151 scripts and 9.96 ms of Redis CPU per task, take "
        "answer p50 26.1 ms, p99 75.0 ms. Four runs after it gave 3.05-3.38 scripts, "
        "0.50-0.86 ms and 0.74-1.00 ms, with 200 idle scripts a second: each waiting take "
        "still rechecked the queue once a second. Since the process rechecks each queue once "
        "a second for all its takes, three runs gave 1 idle script a second, 2.00 scripts "
        "and 0.39-0.42 ms of Redis CPU per task, take answer p50 0.72-0.74 ms.",
    ]
    return section
