"""showTestPage in a real headless Chromium: the jQuery page's four buttons drive a round trip.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by Playwright; set
``CHROMIUM`` to use another binary. Without one the test skips, except under ``CI=true``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.compat.conftest import ADMIN_TOKEN, KEY_PREDICT, V0Broker

pytestmark = pytest.mark.redis

TIMEOUT_MS = 15_000


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def wait_for_value(page: Any, selector: str, predicate: str) -> str:
    page.wait_for_function(f"() => {{ const v = document.querySelector('{selector}').value; "
                           f"return {predicate}; }}")  # fmt: skip
    return str(page.input_value(selector))


def wait_for_text(page: Any, selector: str, expected: str) -> None:
    page.wait_for_function(
        "([selector, expected]) => document.querySelector(selector).textContent === expected",
        arg=[selector, expected],
    )


def test_the_jquery_page_drives_a_round_trip(v0_broker: V0Broker, page: Any):
    requests_seen: list[Any] = []
    page.on("request", lambda request: requests_seen.append(request))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(v0_broker.function_url("showTestPage", KEY_PREDICT))
    assert page.evaluate("typeof jQuery === 'function' && jQuery.fn.jquery") == "3.7.1"

    payload = "Payload data: héllo wörld ✓"
    page.fill("#newTaskPayload", payload)
    page.click("#btnNewTask")
    client_id = wait_for_value(page, "#task_id_client", "v.endsWith('.payload')")

    page.click("#btnFetchTaskResult")
    wait_for_text(page, "#client_results", "task_id not found!")  # the sentinel, decoded

    page.click("#btnFetchNext")
    worker_id = wait_for_value(page, "#task_id_mlserver", "v.length > 0")
    wait_for_text(page, "#MLServer_payload", payload)
    assert worker_id.split(".")[0] == client_id.split(".")[0]

    page.fill("#task_result", "Task result: ✓ done")
    page.click("#btnSendTaskResult")
    wait_for_text(page, "#status", f"result stored for {worker_id}")

    page.click("#btnFetchTaskResult")
    wait_for_text(page, "#client_results", "Task result: ✓ done")

    page.click("#btnFetchNext")
    wait_for_text(page, "#status", "no task available")
    assert errors == []

    # What went over the wire: the page and its jQuery from the broker, nothing from elsewhere,
    # and each call a $.post of JSON text, form-encoded as jQuery sends strings.
    assert all(r.url.startswith(v0_broker.url + "/api/") for r in requests_seen)
    calls = [r for r in requests_seen if r.resource_type == "xhr"]
    names = [r.url.split("/api/")[1].split("?")[0] for r in calls]
    assert names == ["predict_v0", "getresult_v0", "getnexttask_v0", "puttaskresult_v0",
                     "getresult_v0", "getnexttask_v0"]  # fmt: skip
    for request in calls:
        assert request.method == "POST"
        if "getnexttask_v0" in request.url:
            assert not request.post_data  # $.post(url, ""): an empty POST
            continue
        assert request.headers["content-type"] == "application/x-www-form-urlencoded; charset=UTF-8"
        assert isinstance(json.loads(request.post_data), dict)

    task = requests.get(f"{v0_broker.url}/tasks/{client_task_id(client_id)}", timeout=5,
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()  # fmt: skip
    assert task["status"] == "succeeded" and task["worker_id"].startswith("v0@")


def client_task_id(client_id: str) -> str:
    from broker.compat import parse_id

    return parse_id(client_id)[0]
