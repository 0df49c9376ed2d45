"""inferbox-worker: flags, environment, handler loading, signals, one real run."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
import responses

from worker import HandlerLoadError, Worker
from worker.cli import _install_signal_handlers, load_handler, main, parse_args
from worker.examples import digits

BROKER = "http://broker.test"


@pytest.fixture
def broker() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BROKER_URL", "TOKEN", "QUEUE", "HANDLER", "LEASE", "WAIT", "MAX_TASKS",
                 "BATCH_SIZE", "KERAS_MODEL", "PREPROCESS", "POSTPROCESS", "RESULT_TYPE",
                 "PIPELINE", "PREFETCH", "PROGRESS", "MODEL_VERSION"):
        monkeypatch.delenv(f"INFERBOX_{name}", raising=False)


def test_flags_are_parsed() -> None:
    args = parse_args(
        ["--broker", BROKER, "--handler", "m:f", "--queue", "q", "--lease", "30", "--wait", "5",
         "--worker-id", "w9", "--max-tasks", "3", "--token", "t", "--log-level", "debug"],
        {},
    )  # fmt: skip
    assert (args.broker, args.handler, args.queue, args.token) == (BROKER, "m:f", "q", "t")
    assert (args.lease, args.wait, args.worker_id, args.max_tasks) == (30, 5, "w9", 3)
    assert args.log_level == "DEBUG"


def test_every_flag_can_come_from_the_environment_and_the_flag_wins() -> None:
    environ = {
        "INFERBOX_BROKER_URL": BROKER,
        "INFERBOX_TOKEN": "env-token",
        "INFERBOX_QUEUE": "env-queue",
        "INFERBOX_HANDLER": "m:f",
        "INFERBOX_LEASE": "90",
    }
    args = parse_args(["--queue", "flag-queue"], environ)
    assert (args.broker, args.token, args.handler, args.lease) == (BROKER, "env-token", "m:f", 90)
    assert args.queue == "flag-queue"


def test_defaults_when_neither_flag_nor_environment_says() -> None:
    args = parse_args(["--broker", BROKER, "--handler", "m:f"], {})
    assert (args.queue, args.lease, args.wait, args.token, args.max_tasks) == (
        "default",
        60,
        20,
        None,
        None,
    )
    assert (args.batch_size, args.pipeline, args.prefetch) == (1, True, 1)


def test_prefetch_from_the_flag_or_the_environment() -> None:
    base = ["--broker", BROKER, "--handler", "m:f"]
    assert parse_args([*base, "--prefetch", "4"], {}).prefetch == 4
    assert parse_args(base, {"INFERBOX_PREFETCH": "8"}).prefetch == 8


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--handler", "m:f"], {}),  # no broker
        (["--broker", BROKER], {}),  # no handler
        (["--broker", BROKER, "--handler", "m:f"], {"INFERBOX_LEASE": "soon"}),
        (["--broker", BROKER, "--handler", "m:f", "--prefetch", "0"], {}),
        (["--broker", BROKER, "--handler", "m:f"], {"INFERBOX_PREFETCH": "17"}),
    ],
)
def test_missing_or_invalid_settings_are_usage_errors(argv, environ, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv, environ)
    assert caught.value.code == 2
    assert "inferbox-worker" in capsys.readouterr().err


def test_load_handler_imports_module_function() -> None:
    assert load_handler("worker.examples.digits:predict") is digits.predict


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("worker.examples.digits", "module:function"),
        (":predict", "module:function"),
        ("no_such_module_xyz:predict", "cannot import"),
        ("worker.examples.digits:nope", "no attribute"),
        ("worker.examples.digits:HELD_OUT", "not callable"),
    ],
)
def test_load_handler_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(HandlerLoadError, match=message):
        load_handler(spec)


def test_main_with_a_bad_handler_exits_2(capsys) -> None:
    assert main(["--broker", BROKER, "--handler", "no_such_module_xyz:f"]) == 2
    assert "cannot import" in capsys.readouterr().err


def test_main_runs_the_digits_model_against_the_broker(broker, monkeypatch) -> None:
    monkeypatch.setenv("INFERBOX_TOKEN", "wtok")
    payload, label = digits.sample(0)
    broker.add(
        responses.POST,
        f"{BROKER}/getnexttask",
        json=payload,
        headers={"X-Inferbox-Task-Id": "T1", "X-Inferbox-Lease-Id": "L1"},
    )
    broker.add(responses.POST, f"{BROKER}/puttaskresult/T1", json={"status": "succeeded"})
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    argv = ["--broker", BROKER, "--queue", "digits", "--max-tasks", "1",
            "--handler", "worker.examples.digits:predict"]  # fmt: skip
    assert main(argv) == 0
    take, put = (call.request for call in broker.calls)
    assert take.headers["Authorization"] == "Bearer wtok"
    assert take.params["queue"] == "digits"
    assert json.loads(put.body)["digit"] == label
    assert {sig: signal.getsignal(sig) for sig in before} == before  # handlers restored


def test_first_signal_stops_gracefully_second_interrupts() -> None:
    worker = Worker(BROKER)
    previous = _install_signal_handlers(worker)
    try:
        on_signal = signal.getsignal(signal.SIGTERM)
        assert callable(on_signal)
        on_signal(signal.SIGTERM, None)
        assert worker.stopping
        with pytest.raises(KeyboardInterrupt):
            on_signal(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
