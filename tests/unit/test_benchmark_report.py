"""The benchmark's pure parts: ratios, targets, tables, marker replacement, section choice,
percentiles, how rounds combine, profile summaries, and the depth populate's faithfulness to a
real submit.

No timings are asserted: the benchmark itself (``python -m benchmarks.run``) never runs here.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import fakeredis
import pytest

from benchmarks import processes, profiling, servers, tracing
from benchmarks.config import QUICK
from benchmarks.depth import populate
from benchmarks.e2e import (
    Latency,
    Throughput,
    by_system,
    latency_section,
    paired_ratio,
    throughput_section,
)
from benchmarks.report import (
    Check,
    Section,
    checks_table,
    fmt,
    markdown_table,
    ratio,
    replace_between,
)
from benchmarks.run import sections_arg
from benchmarks.stats import percentile
from broker import keys as K
from broker.queue import NewTask, TaskQueue

START, END = "<!-- run: start -->", "<!-- run: end -->"


def test_ratio_divides_and_is_nan_without_a_baseline():
    assert ratio(300, 100) == 3.0
    assert math.isnan(ratio(300, 0))
    assert math.isnan(ratio(math.nan, 100))
    assert math.isnan(ratio(100, math.nan))


@pytest.mark.parametrize(("figure", "bound", "at_least", "met"), [
    (1.0, 1.0, True, True), (0.99, 1.0, True, False), (3.5, 3.0, True, True),
    (2.0, 2.0, False, True), (2.01, 2.0, False, False), (40.0, 50.0, False, True),
    (math.nan, 1.0, True, False), (math.nan, 1.0, False, False),
])  # fmt: skip
def test_check_meets_its_bound_in_the_right_direction(figure, bound, at_least, met):
    check = Check("t", figure, bound, at_least)
    assert check.met is met
    assert check.verdict == ("met" if met else "MISSED")


def test_check_texts_show_direction_and_unit():
    check = Check("broker RSS", 14.07, 50, False, " MB")
    assert check.bound_text() == "<= 50 MB"
    assert check.figure_text() == "14.07 MB"
    assert Check("connections", 93.0, 64, False, "", digits=0).figure_text() == "93"
    assert Check("ratio", 2.0, 1.5, True).bound_text() == ">= 1.50x"
    assert Check("x", math.nan, 1, True).figure_text() == "-x"


def test_fmt_rounds_large_numbers_and_marks_missing_ones():
    assert fmt(1234.5) == "1,234"
    assert fmt(3.14159) == "3.14"
    assert fmt(3.14159, 3) == "3.142"
    assert fmt(math.nan) == "-"


def test_markdown_table_right_aligns_figures_and_escapes_pipes():
    table = markdown_table(["system", "tasks/s"], [["a|b", "12.0"]])
    assert table.splitlines() == ["| system | tasks/s |", "| --- | ---: |",
                                  "| a\\|b | 12.0 |"]  # fmt: skip


def test_checks_table_lists_every_sections_checks_in_order():
    first = Section("a", "A", [], checks=[Check("one", 2.0, 1.0, True)])
    second = Section("b", "B", [], checks=[Check("two", 9.0, 5.0, False, " MB")])
    columns, rows = checks_table([first, second])
    assert columns == ["target", "bound", "measured", "verdict"]
    assert rows == [["one", ">= 1x", "2.00x", "met"],
                    ["two", "<= 5 MB", "9.00 MB", "MISSED"]]  # fmt: skip


def test_replace_between_keeps_everything_outside_the_markers():
    other = "<!-- sync_predict: start -->\nkept table\n<!-- sync_predict: end -->"
    text = f"# Results\n\n{other}\n\n{START}\nold figures\n{END}\ntrailer\n"
    updated = replace_between(text, START, END, "new figures")
    assert updated == f"# Results\n\n{other}\n\n{START}\nnew figures\n{END}\ntrailer\n"


def test_replace_between_appends_the_block_when_the_markers_are_missing():
    updated = replace_between("# Results\n", START, END, "figures\n")
    assert updated == f"# Results\n\n{START}\nfigures\n{END}\n"
    assert replace_between(updated, START, END, "again") == f"# Results\n\n{START}\nagain\n{END}\n"


@pytest.mark.parametrize("text", [f"{START}\nno end", f"no start\n{END}", f"{END}\n{START}"])
def test_replace_between_refuses_unbalanced_markers(text):
    with pytest.raises(ValueError, match="unbalanced"):
        replace_between(text, START, END, "x")


def test_sections_arg_keeps_the_benchmark_order_and_rejects_unknown_names():
    assert sections_arg("depth, throughput") == ["throughput", "depth"]
    with pytest.raises(argparse.ArgumentTypeError, match="nonsense"):
        sections_arg("throughput,nonsense")
    with pytest.raises(argparse.ArgumentTypeError):
        sections_arg(" , ")


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.9) == 7.0
    assert math.isnan(percentile([], 0.5))


def _run(name, rate, number, tasks=100):
    return Throughput(name, tasks, tasks / rate, {"client": 0.1, "servers": 0.2, "redis": 0.0},
                      number)  # fmt: skip


def test_a_systems_rate_is_the_median_of_its_rounds_and_its_ratio_pairs_rounds():
    # The machine slows down in round 3: both systems drop, each round's ratio still holds.
    rounds = by_system([_run("celery", 400, 1), _run("ours", 800, 1),
                        _run("celery", 500, 2), _run("ours", 600, 2),
                        _run("celery", 100, 3), _run("ours", 300, 3)])  # fmt: skip
    ours, celery = rounds["ours"], rounds["celery"]
    assert list(rounds) == ["celery", "ours"]
    assert ours.rate == 600 and ours.spread == (300, 800) and ours.tasks == 300
    assert paired_ratio(ours, celery) == 2.0  # the rounds' ratios are 2, 1.2 and 3
    assert ours.rate / celery.rate == 1.5  # medians of rates would pair unlike rounds
    assert ours.cpu_ms() == pytest.approx(3.0) and ours.cpu_ms("servers") == pytest.approx(2.0)


def test_a_ratio_uses_only_rounds_both_systems_completed():
    ours = by_system([_run("ours", 300, 1), _run("ours", 900, 2)])["ours"]
    celery = by_system([_run("celery", 300, 2)])["celery"]  # its round 1 failed
    assert paired_ratio(ours, celery) == 3.0
    assert math.isnan(paired_ratio(ours, None))
    assert math.isnan(paired_ratio(ours, by_system([_run("celery", 100, 3)])["celery"]))


def test_throughput_section_checks_the_paired_ratios():
    rows = [_run(name, rate, number) for number in (1, 2)
            for name, rate in [("Celery (prefork)", 300), ("RQ Worker (fork)", 100),
                               ("inferbox submit + result", 330)]]  # fmt: skip
    section = throughput_section(rows, QUICK)
    figures = {check.target: check.figure for check in section.checks}
    assert figures["throughput, one request per task vs Celery"] == pytest.approx(1.1)
    assert figures["throughput, one request per task vs RQ fork"] == pytest.approx(3.3)
    assert math.isnan(figures["throughput, batched vs Celery"])  # no batched row measured
    assert [row[:2] for row in section.rows][2] == ["inferbox submit + result", "200"]


def test_latency_pools_the_rounds_samples_and_the_floors():
    rows = [Latency("ours", [0.004] * 3, hops=3, targeted=True),
            Latency("floor x3", [0.001] * 3, hops=3, floor=True),
            Latency("ours", [0.010] * 2, hops=3, targeted=True),
            Latency("floor x3", [0.002] * 2, hops=3, floor=True)]  # fmt: skip
    section = latency_section(rows, QUICK)
    assert [row[0] for row in section.rows] == ["ours", "floor x3"]
    ours = section.rows[0]
    assert ours[1:4] == ["4.00", "10.00", "10.00"]  # p50 of the 5 pooled samples, p90, p99
    assert ours[4:6] == ["1.00", "2.00"]  # the pooled floor's p50 and p99
    assert {check.target: check.figure for check in section.checks} == {
        "latency p50 vs 3 bare round trips (ours)": 4.0,
        "latency p99 vs 3 bare round trips (ours)": 5.0,
    }
    assert section.rows[1][4:] == ["", "", "", ""]  # the floor is not compared with itself


def test_profile_ranks_busy_frames_and_leaves_idle_waits_out():
    lines = [
        "run (gthread.py:10);handle (app.py:5);_read_from_socket (socket.py:64) 30",
        "run (gthread.py:10);handle (app.py:6);write (file.py:101) 10",
        "run (gthread.py:10);wait (threading.py:320) 500",
        "_bootstrap (threading.py:1);_listen (notify.py:80);read (socket.py:9) 400",
        "garbage line",
    ]
    busy, by_self, by_total = profiling.rank(profiling.parse(lines))
    assert busy == 40
    assert by_self == [("_read_from_socket (socket.py:64)", 30), ("write (file.py:101)", 10)]
    assert dict(by_total)["handle (app.py)"] == 40  # two lines of one function, summed


def test_cpu_profile_sorts_samples_by_the_package_whose_code_ran():
    lines = [
        "run (gunicorn/workers/gthread.py:10);wsgi (flask/app.py:5);hgetall (redis/client.py:9) 30",
        "run (gunicorn/workers/gthread.py:10);parse (gunicorn/http/message.py:6) 20",
        "run (gunicorn/workers/gthread.py:10);put (storage/file.py:101);fsync (<frozen os>:1) 5",
        "_bootstrap (threading.py:1);_listen (broker/notify.py:80) 7",
        "somewhere (elsewhere.py:3) 1",
    ]
    assert profiling.by_package(profiling.parse(lines)) == [
        ("redis-py: the Redis client", 30),
        ("gunicorn: HTTP parsing and writing, its thread pool", 20),
        ("inferbox broker code", 7),
        ("os and path calls", 5),
        ("other", 1),
    ]
    _, by_self, _ = profiling.rank(profiling.parse(lines), idle=lambda stack: False)
    assert ("_listen (broker/notify.py:80)", 7) in by_self  # a GIL sample is never idle


def test_every_step_the_path_tracer_times_exists():
    import importlib

    from benchmarks import tracing

    for kind, steps in tracing.STEPS.items():
        for module_name, class_name, function_names in steps:
            owner = getattr(importlib.import_module(module_name), class_name)
            for function_name in function_names:
                assert callable(getattr(owner, function_name)), (kind, class_name, function_name)


def test_path_steps_are_placed_in_the_task_whose_window_they_started_in():
    from benchmarks import path

    windows = [(10.0, 10.010), (20.0, 20.010)]
    events = [
        (9.0, 10.5, "BrokerAPI.take"),  # began before the first task: in none
        (10.001, 10.002, "TaskQueue.take"), (10.003, 10.004, "TaskQueue.take"),
        (20.002, 20.003, "TaskQueue.take"),
        (20.004, 20.005, "FileStore._put"),  # in one task of two: still shown
        (30.0, 30.1, "FileStore._get"),  # after every task
    ]
    rows = {step: (count, start, took) for step, count, start, took in path.steps(windows, events)}
    assert rows["TaskQueue.take"][0] == 2
    assert rows["TaskQueue.take"][1] == pytest.approx(1.5)  # ms: median of 1 and 2
    assert rows["TaskQueue.take #2"][:2] == (1, pytest.approx(3.0))
    assert rows["FileStore._put"][0] == 1
    assert "BrokerAPI.take" not in rows and "FileStore._get" not in rows
    assert rows["client: the whole task"] == (2, 0.0, pytest.approx(10.0))
    assert list(rows)[-1] == "client: the whole task"


def test_populate_writes_the_index_entries_a_real_submit_writes():
    """The depth benchmark's fast fill must leave what TaskQueue.submit leaves."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    real = TaskQueue(client, clock=lambda: 1000.0)
    real_id = real.submit(NewTask(queue="q", owner="o", content_type="application/json",
                                  size=16)).task_id  # fmt: skip
    populate(client, "q", 3, owner="o", clock=lambda: 1000.0)
    keys = K.Keys(K.DEFAULT_PREFIX)
    ids = [member.decode() for member in client.zrange(keys.queue("q"), 0, -1)]
    assert len(ids) == 4 and ids[0] == real_id  # FIFO: the real submit is the head
    varying = {b"id", b"payload_key", b"score"}
    expected = {k: v for k, v in client.hgetall(keys.task(real_id)).items() if k not in varying}
    for task_id in ids[1:]:
        fields = client.hgetall(keys.task(task_id))
        assert {k: v for k, v in fields.items() if k not in varying} == expected
        assert fields[b"payload_key"] == K.payload_key(task_id).encode()
        assert client.zscore(f"{K.DEFAULT_PREFIX}:ttl", task_id) == 1000.0 + K.DEFAULT_TTL
    assert client.hget(keys.stats("q"), "submitted") == b"4"
    assert client.smembers(keys.queues) == {b"q"}


def test_the_path_trace_names_each_route_once_whatever_the_task_id():
    assert tracing._route("/getresult/3kqZ_a") == tracing._route("/getresult/Q9x") == (
        "/getresult/<id>")
    assert tracing._route("/tasks/3kqZ_a/heartbeat") == "/tasks/<id>/heartbeat"
    assert tracing._route("/predict") == "/predict"


def test_the_process_comparison_pairs_each_count_with_the_rounds_of_two_processes():
    rows = [_run("1 process: inferbox", 60, 1), _run("2 processes: inferbox", 100, 1),
            _run("4 processes: inferbox", 80, 1), _run("4 processes: inferbox", 40, 2),
            _run("2 processes: inferbox", 50, 2), _run("1 process: inferbox", 40, 2)]  # fmt: skip
    lines = processes.table(rows).splitlines()
    assert lines[0].split(" | ")[:4] == ["| broker: system", "tasks/s", "rounds", "x 2 processes"]
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| 1 process: inferbox", "| 2 processes: inferbox", "| 4 processes: inferbox"]
    # 1 process: ratios 0.6 and 0.8 (median 0.7); 4 processes: 0.8 and 0.8
    assert [line.split(" | ")[3] for line in lines[2:]] == ["0.70", "1.00", "0.80"]


def test_process_counts_must_be_distinct_positive_numbers():
    assert processes.counts("1,2,4") == [1, 2, 4]
    for bad in ("0,2", "2,2", "two", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            processes.counts(bad)
    with pytest.raises(SystemExit):  # the baseline count must be among them
        processes.main(["--processes", "1,3"])


def test_the_server_comparison_pairs_each_system_with_its_gunicorn_rounds():
    rows = [_run("gunicorn: floor", 200, 1), _run("gunicorn: inferbox", 100, 1),
            _run("granian: floor", 300, 1), _run("granian: inferbox", 120, 1),
            _run("gunicorn: floor", 100, 2), _run("gunicorn: inferbox", 50, 2),
            _run("granian: floor", 110, 2), _run("granian: inferbox", 100, 2)]  # fmt: skip
    lines = servers.table(rows).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| gunicorn: floor", "| gunicorn: inferbox", "| granian: floor", "| granian: inferbox"]
    # granian's floor: ratios 1.5 and 1.1 (median 1.3); its inferbox: 1.2 and 2.0 (1.6)
    assert [line.split(" | ")[3] for line in lines[2:]] == ["1.00", "1.00", "1.30", "1.60"]
    assert lines[5].split(" | ")[1:3] == ["110", "100-120"]


def _partition(device: str, mountpoint: str, fstype: str) -> object:
    return argparse.Namespace(device=device, mountpoint=mountpoint, fstype=fstype)


@pytest.mark.parametrize(("journal_task", "described"), [
    ("<none>", "ext4 at /, no journal"),
    ("jbd2/vda-8", "ext4 at /, journaled"),
])  # fmt: skip
def test_the_machine_facts_say_whether_the_disk_stores_ext4_keeps_a_journal(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, journal_task: str, described: str) -> None:
    import psutil

    from benchmarks import report

    (tmp_path / "vda").mkdir()
    (tmp_path / "vda" / "journal_task").write_text(journal_task + "\n")
    monkeypatch.setattr(report, "EXT4_SYS", str(tmp_path))
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: [
        _partition("/dev/vda", "/", "ext4"), _partition("tmpfs", "/dev/shm", "tmpfs"),
        _partition("/dev/vdb", "/srv/data", "xfs")])  # fmt: skip
    assert report.file_system("/tmp") == described
    assert report.file_system("/dev/shm/x") == "tmpfs at /dev/shm"  # the deepest mount wins
    assert report.file_system("/srv/data/inbox") == "xfs at /srv/data"
    assert report.file_system("/srv/database") == described  # a prefix of a name is not a mount


def test_a_systems_store_folder_outlives_the_system_until_the_process_ends() -> None:
    from benchmarks import systems

    folder = systems.scratch_dir(durable=False)
    try:
        (Path(folder) / "blob").write_bytes(b"x")
        assert folder in systems._SCRATCH
    finally:
        systems._remove_scratch()  # what the process's exit runs
    assert not Path(folder).exists() and not systems._SCRATCH
