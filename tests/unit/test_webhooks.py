"""Webhooks: the SSRF guard, signatures (broker side and client_sdk.webhooks), submit options,
and in-process delivery (the embedded default) to a real receiver on loopback."""

from __future__ import annotations

import base64
import json
import socket
import time

import fakeredis
import pytest

from broker import Settings, create_app
from broker.errors import SettingsError, WebhookRefused
from broker.queue import TaskQueue
from broker.webhooks import AddressPolicy
from broker.webhooks import signing as broker_signing
from client_sdk.errors import WebhookVerificationError
from client_sdk.webhooks import sign, verify
from storage import open_store
from tests.receiver import Receiver
from tests.unit.brokerkit import recheck_every

SECRET = "whsec_" + base64.b64encode(b"sixteen byte key").decode()
CLIENT = {"Authorization": "Bearer c"}
WORKER = {"Authorization": "Bearer w"}


# -- the guard -------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "http://user:pw@example.com/",
    "http://127.0.0.1/", "http://127.8.9.10:8080/", "http://10.0.0.1/hook", "http://172.20.1.1/",
    "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
    "http://[fe80::1]/", "http://[fd00:ec2::254]/", "http://[::ffff:127.0.0.1]/",
    "http://100.100.100.200/", "http://0.0.0.0/", "http://localhost:9000/",
    "http://api.localhost/", "https://example.com/" + "x" * 2100,
])  # fmt: skip
def test_guard_refuses_what_is_not_a_public_http_url(url):
    with pytest.raises(WebhookRefused):
        AddressPolicy().check_url(url)


def test_guard_accepts_public_urls_and_the_allow_list():
    assert AddressPolicy().check_url("https://hooks.example.com/a?b=1").path == "/a?b=1"
    assert AddressPolicy().check_url("http://93.184.216.34:8080/").port == 8080
    allow = AddressPolicy.from_items(("127.0.0.1", "10.1.0.0/16", "hooks.internal"))
    for url in ("http://127.0.0.1:9/", "http://10.1.2.3/", "http://[::ffff:10.1.0.9]/"):
        allow.check_url(url)
    with pytest.raises(WebhookRefused):
        allow.check_url("http://10.2.0.1/")


def test_guard_checks_every_resolved_address(monkeypatch):
    answers = {"rebind.example": ["93.184.216.34", "10.0.0.7"], "ok.example": ["93.184.216.34"],
               "hooks.internal": ["10.9.9.9"]}  # fmt: skip

    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(WebhookRefused, match="10.0.0.7"):
        AddressPolicy().resolve("https://rebind.example/h")
    assert [str(a) for a in AddressPolicy().resolve("https://ok.example/h").addresses] == [
        "93.184.216.34"]
    with pytest.raises(WebhookRefused):
        AddressPolicy().resolve("https://hooks.internal/h")
    allowed = AddressPolicy.from_items(("hooks.internal",)).resolve("https://hooks.internal/h")
    assert [str(a) for a in allowed.addresses] == ["10.9.9.9"]


def test_bad_settings_are_refused_at_start():
    with pytest.raises(SettingsError):
        Settings.from_env({"INFERBOX_WEBHOOK_ALLOW": "not a network!"})
    with pytest.raises(SettingsError):
        Settings.from_env({"INFERBOX_WEBHOOK_SECRET": "whsec_***"})
    with pytest.raises(SettingsError):
        Settings.from_env({"INFERBOX_WEBHOOK_RETRY_DELAYS": "1,x"})
    settings = Settings.from_env({"INFERBOX_WEBHOOK_RETRY_DELAYS": "1, 2,3",
                                  "INFERBOX_WEBHOOK_ALLOW": "127.0.0.1,::1/128"})  # fmt: skip
    assert settings.webhook_retry_delays == (1, 2, 3)
    assert settings.webhook_allow == ("127.0.0.1", "::1/128")


# -- signatures ------------------------------------------------------------------------------------

def test_broker_signature_verifies_with_the_sdk_helper():
    body = json.dumps({"type": "task.completed", "data": {"task_id": "x"}}).encode()
    now = int(time.time())
    headers = broker_signing.headers(broker_signing.secret_key(SECRET), "msg_1", now, body)
    assert headers["webhook-signature"] == sign(SECRET, "msg_1", now, body)
    assert verify(SECRET, {k.title(): v for k, v in headers.items()}, body)["type"] == (
        "task.completed")
    for bad_body, bad_headers, what in [
        (body + b" ", headers, "does not match"),
        (body, {**headers, "webhook-id": "msg_2"}, "does not match"),
        (body, {**headers, "webhook-timestamp": str(now - 600)}, "off"),
        (body, {k: v for k, v in headers.items() if k != "webhook-signature"}, "missing"),
    ]:
        with pytest.raises(WebhookVerificationError, match=what):
            verify(SECRET, bad_headers, bad_body)
    with pytest.raises(WebhookVerificationError):
        verify("another-secret", headers, body)


def test_a_rotated_secret_is_one_of_several_signatures():
    body, now = b"{}", int(time.time())
    header = f"v1,bm9wZQ== {sign('plain-secret', 'msg', now, body)}"
    headers = {"webhook-id": "msg", "webhook-timestamp": str(now), "webhook-signature": header}
    assert verify("plain-secret", headers, body) == {}


# -- submit ----------------------------------------------------------------------------------------

def make_app(**settings):
    base = dict(client_tokens=("c",), worker_tokens=("w",), storage_url="memory://")
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    app = create_app(Settings(**{**base, **settings}), queue=queue, store=open_store("memory://"))
    recheck_every(app, 0.05)
    return app


def test_submit_options_are_checked():
    http = make_app(webhook_secret=SECRET).test_client()
    refused = [
        ({"webhook": "http://10.0.0.1/h"}, "webhook_refused"),
        ({"webhook": "gopher://example.com/"}, "webhook_refused"),
        ({"webhook": "https://example.com/h", "webhook_events": "done"}, "invalid_option"),
        ({"webhook": ""}, "invalid_option"),
        ({"webhook": "https://example.com/h", "webhook_events": ""}, "invalid_option"),
        ({"webhook_events": "done"}, "invalid_option"),  # checked even without a webhook
        ({"webhook_events": ""}, "invalid_option"),
    ]
    for query, code in refused:
        response = http.post("/predict", data=b"{}", content_type="application/json",
                             headers=CLIENT, query_string=query)  # fmt: skip
        assert (response.status_code, response.json["error"]) == (400, code), query
    response = http.post("/predict", data=b"{}", content_type="application/json",
                         headers={**CLIENT, "X-Inferbox-Webhook": "https://example.com/h",
                                  "X-Inferbox-Webhook-Events": "progress,completed"})
    assert response.status_code == 202
    assert response.json["webhook"] == {"url": "https://example.com/h",
                                        "events": ["progress", "completed"], "deliveries": []}
    unused = http.post("/predict", data=b"{}", content_type="application/json", headers=CLIENT,
                       query_string={"webhook_events": "failed"})  # fmt: skip
    assert (unused.status_code, unused.json["webhook"]) == (202, None)


def test_without_a_secret_webhooks_are_refused_and_nothing_is_stored():
    app = make_app()
    http = app.test_client()
    response = http.post("/predict", data=b"{}", headers=CLIENT,
                         query_string={"webhook": "https://example.com/h"})  # fmt: skip
    assert (response.status_code, response.json["error"]) == (400, "webhook_refused")
    assert "INFERBOX_WEBHOOK_SECRET" in response.json["message"]
    assert app.extensions["inferbox"].mailbox.queue.stats() == []


# -- in-process delivery (the embedded default) ---------------------------------------------------

def run_task(http, webhook_url: str, events: str = "completed,failed,progress") -> str:
    task_id = http.post("/predict", data=b'{"x": 1}', content_type="application/json",
                        headers=CLIENT, query_string={"webhook": webhook_url,
                                                      "webhook_events": events}).json["task_id"]
    taken = http.post("/getnexttask", headers=WORKER)
    lease = {"X-Inferbox-Lease-Id": taken.headers["X-Inferbox-Lease-Id"]}
    http.post(f"/tasks/{task_id}/heartbeat", headers={**WORKER, **lease},
              json={"progress": {"fraction": 0.5, "message": "halfway"}})
    http.post(f"/puttaskresult/{task_id}", data=b'{"y": 2}', content_type="application/json",
              headers={**WORKER, **lease})
    return task_id


def deliveries(http, task_id, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = http.get(f"/tasks/{task_id}", headers=CLIENT).json["webhook"]["deliveries"]
        if len(log) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} delivery attempts: {log}")


def test_in_process_delivery_is_signed_and_in_order():
    receiver = Receiver().start()
    try:
        http = make_app(webhook_secret=SECRET, webhook_allow=("127.0.0.1",)).test_client()
        task_id = run_task(http, receiver.url)
        received = receiver.wait_for(2)
    finally:
        receiver.stop()
    events = [verify(SECRET, headers, body) for headers, body, _ in received]
    assert sorted(e["type"] for e in events) == ["task.completed", "task.progress"]
    progress = next(e for e in events if e["type"] == "task.progress")
    assert progress["data"]["progress"] == {"fraction": 0.5, "message": "halfway"}
    completed = next(e for e in events if e["type"] == "task.completed")
    assert completed["data"]["task_id"] == task_id and completed["data"]["status"] == "succeeded"
    assert received[0][2] == "/hooks/inferbox?source=test"
    log = deliveries(http, task_id, 2)
    assert {(entry["outcome"], entry["status_code"]) for entry in log} == {("delivered", 204)}


def test_a_receiver_that_is_down_gets_the_event_on_a_retry():
    receiver = Receiver()  # not listening yet
    http = make_app(webhook_secret=SECRET, webhook_allow=("127.0.0.1",),
                    webhook_retry_delays=(1, 1)).test_client()  # fmt: skip
    task_id = run_task(http, receiver.url, events="completed")
    first = deliveries(http, task_id, 1)
    assert first[0]["outcome"] == "retrying" and first[0]["status_code"] is None
    receiver.start()
    try:
        headers, body, _ = receiver.wait_for(1)[0]
    finally:
        receiver.stop()
    assert verify(SECRET, headers, body)["type"] == "task.completed"
    log = deliveries(http, task_id, 2)
    assert [entry["outcome"] for entry in log] == ["retrying", "delivered"]
    assert log[0]["id"] == log[1]["id"] == headers["webhook-id"]  # one message, two attempts


def test_redirects_are_not_followed_and_private_addresses_not_called(monkeypatch):
    target = Receiver().start()
    redirector = Receiver(status=302, location=target.url).start()
    try:
        http = make_app(webhook_secret=SECRET, webhook_allow=("127.0.0.1",),
                        webhook_retry_delays=(1,)).test_client()  # fmt: skip
        task_id = run_task(http, redirector.url, events="completed")
        log = deliveries(http, task_id, 1)
        assert (log[0]["outcome"], log[0]["status_code"]) == ("failed", 302)
        time.sleep(1.5)
        assert len(deliveries(http, task_id, 1)) == 1 and target.received == []
    finally:
        target.stop()
        redirector.stop()
    # A name that resolves to a private address is refused at delivery, without a request.
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.8", port))])
    http = make_app(webhook_secret=SECRET, webhook_retry_delays=(1,)).test_client()
    task_id = run_task(http, "http://hooks.example.com/h", events="completed")
    log = deliveries(http, task_id, 1)
    assert log[0]["outcome"] == "failed" and "10.0.0.8" in log[0]["error"]


def test_the_relay_survives_a_failing_hand_over_and_drops_malformed_events(clock):
    from broker.notify import Notifier
    from broker.queue import NewTask
    from broker.webhooks import Relay

    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), clock=clock)
    new = NewTask(queue="q", owner="o", content_type="t", size=0,
                  webhook_url="https://example.com/h", webhook_events=("failed",))
    task_id = queue.submit(new).task_id
    queue.cancel(task_id)
    queue.redis.lpush(queue.keys.webhook_outbox, b"not json")
    handed, broken = [], [True]

    def hand_over(event):
        if broken[0]:
            raise ConnectionError("rq is away")
        handed.append(event)

    relay = Relay(queue, Notifier(queue.redis, queue.keys.events), hand_over)
    with pytest.raises(ConnectionError):
        relay.pump()
    broken[0] = False
    assert relay.pump() == 0  # the failed one is still claimed by the first try
    clock.advance(61)
    assert relay.pump() == 1  # reclaimed and handed over; the malformed one was dropped
    assert [(e.task_id, e.event) for e in handed] == [(task_id, "canceled")]
    assert queue.redis.zcard(queue.keys.webhook_relaying) == 0
    assert queue.redis.llen(queue.keys.webhook_outbox) == 0
