"""Backpressure: a full queue and a token over its submit rate get 429 with Retry-After, and a
refused submit stores nothing."""

from __future__ import annotations

import pytest

from broker import Settings
from broker.errors import QueueFull, SettingsError
from broker.queue import NewTask
from tests.unit.brokerkit import CLIENT, OTHER_CLIENT, box, make_app, submit, take


def refused(response, code):
    assert response.status_code == 429, (response.status_code, response.json)
    assert response.json["error"] == code and response.json["message"]
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1 and response.json["retry_after"] <= retry_after
    return retry_after


def test_a_full_queue_refuses_submits_until_it_drains(store, clock):
    http = make_app(store, clock, max_queue_depth=2).test_client()
    submit(http, queue="q")
    submit(http, queue="q")
    assert refused(http.post("/predict?queue=q", data=b"x", headers=CLIENT), "queue_full") == 5
    assert len(list(store.list("inbox/"))) == 2  # the refused payload was never stored
    submit(http, queue="other")  # the limit is per queue
    take(http, queue="q")  # a running task no longer counts
    submit(http, queue="q")


def test_the_depth_is_checked_again_atomically_at_submit(store, clock):
    queue = box(make_app(store, clock)).mailbox.queue
    new = NewTask(queue="q", owner="o", content_type="text/plain", size=1)
    queue.submit(new, max_depth=1)
    with pytest.raises(QueueFull):  # two submits that both passed admission: one gets in
        queue.submit(NewTask(queue="q", owner="o", content_type="text/plain", size=1),
                     max_depth=1)  # fmt: skip


def test_the_submit_rate_is_per_token_with_a_burst(store, clock):
    http = make_app(store, clock, submit_rate=2.0, submit_burst=3).test_client()
    for _ in range(3):
        submit(http)
    retry_after = refused(http.post("/predict", data=b"x", headers=CLIENT), "rate_limited")
    assert retry_after == 1  # one token comes back in half a second; whole seconds upwards
    submit(http, headers=OTHER_CLIENT)  # another token has its own bucket
    clock.advance(0.5)
    submit(http)
    refused(http.post("/predict", data=b"x", headers=CLIENT), "rate_limited")
    clock.advance(10)  # refills up to the burst, no further
    for _ in range(3):
        submit(http)
    refused(http.post("/predict", data=b"x", headers=CLIENT), "rate_limited")
    assert len(list(store.list("inbox/"))) == 8


def test_an_idempotent_replay_is_not_rate_limited(store, clock):
    http = make_app(store, clock, submit_rate=1.0).test_client()
    headers = {**CLIENT, "Idempotency-Key": "k1"}
    first = http.post("/predict", data=b"x", headers=headers)
    again = http.post("/predict", data=b"x", headers=headers)
    assert again.status_code == 202 and again.json["task_id"] == first.json["task_id"]
    refused(http.post("/predict", data=b"y", headers=CLIENT), "rate_limited")


def test_backpressure_settings():
    settings = Settings.from_env({"INFERBOX_MAX_QUEUE_DEPTH": "1000",
                                  "INFERBOX_SUBMIT_RATE": "12.5", "INFERBOX_SUBMIT_BURST": "50"})
    assert (settings.max_queue_depth, settings.submit_rate, settings.submit_burst) == (1000, 12.5,
                                                                                       50)
    defaults = Settings.from_env({})
    assert (defaults.max_queue_depth, defaults.submit_rate) == (0, 0.0)  # off unless asked
    with pytest.raises(SettingsError, match="INFERBOX_SUBMIT_RATE"):
        Settings.from_env({"INFERBOX_SUBMIT_RATE": "-1"})
    with pytest.raises(SettingsError, match="INFERBOX_MAX_QUEUE_DEPTH"):
        Settings.from_env({"INFERBOX_MAX_QUEUE_DEPTH": "lots"})
