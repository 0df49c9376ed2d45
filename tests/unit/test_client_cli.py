"""``inferbox`` submit / status / result against a mocked broker (batch runs for real in
tests/integration/test_sdk_and_workers.py)."""

from __future__ import annotations

import json

import responses

from client_sdk.cli import main

BROKER = "http://broker.test"
ENV = {"INFERBOX_BROKER_URL": BROKER, "INFERBOX_TOKEN": "tok"}


def test_submit_wait_writes_each_result_by_its_type(tmp_path, capsys) -> None:
    photo = tmp_path / "cat.png"
    photo.write_bytes(b"\x89PNG fake")
    with responses.RequestsMock() as broker:
        broker.add(responses.POST, f"{BROKER}/predict", status=202,
                   json={"task_id": "T1", "status": "queued"})  # fmt: skip
        broker.add(responses.GET, f"{BROKER}/getresult/T1", body=b"\x89PNG mask",
                   content_type="image/png")  # fmt: skip
        code = main(["submit", str(photo), "--queue", "seg", "--wait", "-o",
                     str(tmp_path / "out")], ENV)  # fmt: skip
        submit = broker.calls[0].request
    assert code == 0
    assert submit.headers["Content-Type"] == "image/png"
    assert submit.headers["Authorization"] == "Bearer tok"
    assert "queue=seg" in submit.url
    assert (tmp_path / "out" / "cat.png").read_bytes() == b"\x89PNG mask"
    assert capsys.readouterr().out.startswith("T1\t")


def test_status_and_result(tmp_path, capsys) -> None:
    with responses.RequestsMock() as broker:
        broker.add(responses.GET, f"{BROKER}/tasks/T1", json={"task_id": "T1",
                                                               "status": "running"})
        broker.add(responses.GET, f"{BROKER}/getresult/T1", json={"digit": 7})
        broker.add(responses.GET, f"{BROKER}/getresult/T2", status=424,
                   json={"task_id": "T2", "status": "failed", "error": "boom"})  # fmt: skip
        assert main(["status", "T1"], ENV) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "running"
        assert main(["result", "T1"], ENV) == 0
        assert json.loads(capsys.readouterr().out) == {"digit": 7}
        assert main(["result", "T2", "-o", str(tmp_path / "x")], ENV) == 1
        assert "boom" in capsys.readouterr().err


def test_no_broker_is_a_usage_error(capsys) -> None:
    assert main(["status", "T1"], {}) == 2
    assert "INFERBOX_BROKER_URL" in capsys.readouterr().err
