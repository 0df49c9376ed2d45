"""The pages as a person uses them, in real Chromium: submit through "try it", a worker process
runs the task and the result appears; an image goes in and an image comes out; the dashboard
shows the queues, the worker and a failure. Screenshots land in test-artifacts/."""

from __future__ import annotations

import json
import re
import struct
import zlib

import pytest
import requests

from tests.integration.conftest import ADMIN_TOKEN, CLIENT_TOKEN, WORKER_TOKEN, Broker

pytestmark = [pytest.mark.redis, pytest.mark.browser]
expect = pytest.importorskip("playwright.sync_api").expect

# Waits use locator assertions: they run outside the page, so its Content-Security-Policy (no
# eval) does not stop them, as it stops page.wait_for_function.
WAIT_MS = 30_000


def png(width: int, height: int, pixel) -> bytes:
    """A small RGB PNG, made here (nothing is downloaded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width))
                    for y in range(height))  # fmt: skip
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def open_with_token(page, url: str, token: str) -> None:
    page.goto(url)
    page.fill("#token", token)
    page.press("#token", "Tab")  # "change" fires: the page keeps the token and reloads its data


def test_submit_json_and_see_the_result(page, screenshot, web_broker: Broker):
    web_broker.spawn_worker("describe", "--queue", "web", "--model-version", "echo-1.0",
                            worker_id="web-worker")  # fmt: skip
    open_with_token(page, web_broker.url + "/", CLIENT_TOKEN)
    page.fill("#queue", "web")
    payload = '{"text": "hello from the browser"}'
    page.fill("#payload", payload)
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden]) pre")
    shown = json.loads(page.text_content("#result-body pre"))
    assert shown == {"kind": "dict", "echo": {"text": "hello from the browser"}}
    assert "\n  " in page.text_content("#result-body pre")  # pretty-printed
    expect(page.locator("#task-model")).to_have_text("echo-1.0", timeout=WAIT_MS)
    assert page.text_content("#task-status") == "succeeded"
    assert page.text_content("#task-worker") == "web-worker"
    assert page.text_content("#result-type").startswith("application/json")
    screenshot("try-it-json")


def test_submit_an_image_and_see_the_image_result(page, screenshot, web_broker: Broker, tmp_path):
    image = png(16, 16, lambda x, y: (x * 16, y * 16, 128))
    path = tmp_path / "gradient.png"
    path.write_bytes(image)
    open_with_token(page, web_broker.url + "/", CLIENT_TOKEN)
    page.fill("#queue", "web-images")
    page.check('input[name="kind"][value="file"]')
    page.set_input_files("#file", str(path))
    page.click("#submit")
    expect(page.locator("#task-id")).to_have_text(re.compile(r"^[A-Za-z0-9_-]{22}$"),
                                                  timeout=WAIT_MS)
    expect(page.locator("#task-status")).to_have_text("queued", timeout=WAIT_MS)
    # Act as an image model: take the task, check the bytes, post an image back.
    taken = requests.post(f"{web_broker.url}/getnexttask", params={"queue": "web-images",
                          "wait": 10, "worker_id": "image-model"},
                          headers={"Authorization": f"Bearer {WORKER_TOKEN}"}, timeout=20)
    assert taken.status_code == 200
    assert (taken.content, taken.headers["Content-Type"]) == (image, "image/png")
    worker = {"Authorization": f"Bearer {WORKER_TOKEN}",
              "X-Inferbox-Lease-Id": taken.headers["X-Inferbox-Lease-Id"]}
    beat = requests.post(f"{web_broker.url}/tasks/{taken.headers['X-Inferbox-Task-Id']}/heartbeat",
                         json={"progress": {"fraction": 0.5, "message": "inverting"}},
                         headers=worker, timeout=10)  # fmt: skip
    assert beat.status_code == 200
    expect(page.locator("#task-progress-text")).to_have_text("50 % · inverting", timeout=WAIT_MS)
    assert page.text_content("#task-status") == "running"
    screenshot("try-it-progress")
    inverted = png(16, 16, lambda x, y: (255 - x * 16, 255 - y * 16, 127))
    posted = requests.post(
        f"{web_broker.url}/puttaskresult/{taken.headers['X-Inferbox-Task-Id']}", data=inverted,
        headers={"Authorization": f"Bearer {WORKER_TOKEN}", "Content-Type": "image/png",
                 "X-Inferbox-Lease-Id": taken.headers["X-Inferbox-Lease-Id"]}, timeout=10)
    assert posted.status_code == 200
    page.wait_for_selector("#result-body img")
    expect(page.locator("#result-body img")).to_have_js_property("naturalWidth", 16,
                                                                 timeout=WAIT_MS)
    assert page.text_content("#task-status") == "succeeded"
    screenshot("try-it-image")


def test_bad_input_shows_the_brokers_message(page, web_broker: Broker):
    open_with_token(page, web_broker.url + "/", "not-a-token")
    page.fill("#payload", "hello")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "401 unauthorized" in page.text_content("#error")


def test_dashboard_shows_queues_workers_and_failures(page, screenshot, web_broker: Broker):
    web_broker.spawn_worker("poison", "--queue", "dash", "--model-version", "poison-2",
                            worker_id="dash-worker")  # fmt: skip
    client = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
    submitted = [requests.post(f"{web_broker.url}/predict", params={"queue": "dash"},
                               json={"value": i}, headers=client, timeout=10).json()["task_id"]
                 for i in range(4)]  # fmt: skip
    bad = requests.post(f"{web_broker.url}/predict", params={"queue": "dash", "max_attempts": 1},
                        json={"poison": True}, headers=client, timeout=10).json()["task_id"]
    for i in range(3):
        requests.post(f"{web_broker.url}/predict", params={"queue": "dash-backlog"},
                      json={"value": i}, headers=client, timeout=10)
    for task_id in [*submitted, bad]:
        requests.get(f"{web_broker.url}/getresult/{task_id}", params={"wait": 30},
                     headers=client, timeout=40)
    open_with_token(page, web_broker.url + "/dashboard", ADMIN_TOKEN)
    page.wait_for_selector("#workers td.name:text('dash-worker')")
    queues = {row[0]: row for row in table(page, "queues")}
    assert queues["dash"][1:3] == ["0", "0"] and queues["dash"][6:8] == ["4", "1"]
    assert queues["dash-backlog"][1] == "3" and queues["dash-backlog"][5] == "3"
    worker = next(row for row in table(page, "workers") if row[0] == "dash-worker")
    assert worker[1] == "alive" and worker[2] == "dash" and worker[4:7] == ["4", "1", "poison-2"]
    failure = table(page, "failures")[0]
    assert failure[1] == bad and failure[5] == "failed" and "poison pill" in failure[6]
    page.wait_for_timeout(2500)  # it refreshes by itself: the "updated" time moves on
    first = page.text_content("#updated")
    expect(page.locator("#updated")).not_to_have_text(first or "", timeout=WAIT_MS)
    screenshot("dashboard")


def table(page, table_id: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{table_id} tbody tr",
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))",
    )
