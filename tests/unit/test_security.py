"""Who may do what: roles and tenants on every endpoint, queue-limited tokens, hashed tokens,
constant-time comparison, unguessable ids, validated keys, CORS and security headers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import re
import string
import sys

import pytest
from flask import Response

from broker import Settings
from broker.auth import TokenTable
from broker.cli import main
from broker.errors import AuthError, SettingsError
from broker.task import new_task_id
from client_sdk.http import multipart_body, parse_multipart
from tests.unit.brokerkit import (
    ADMIN,
    CLIENT,
    OTHER_CLIENT,
    WORKER,
    box,
    make_app,
    put,
    submit,
    take,
)

NOBODY = {"Authorization": "Bearer not-a-token"}
CALLERS = {"nobody": NOBODY, "owner": CLIENT, "other": OTHER_CLIENT, "worker": WORKER,
           "admin": ADMIN}  # fmt: skip

# endpoint -> caller -> expected status. A new route without a row here fails the test below.
EXPECTED = {
    ("POST", "/predict"): {"nobody": 401, "owner": 202, "other": 202, "worker": 403,
                           "admin": 202},
    ("POST", "/predictbatch"): {"nobody": 401, "owner": 202, "other": 202, "worker": 403,
                                "admin": 202},
    ("POST", "/getresults"): {"nobody": 401, "owner": 200, "other": 200, "worker": 403,
                              "admin": 200},  # another owner's task: a not_found part
    ("GET", "/tasks/<task_id>"): {"nobody": 401, "owner": 200, "other": 404, "worker": 403,
                                  "admin": 200},
    ("GET", "/getresult/<task_id>"): {"nobody": 401, "owner": 200, "other": 404, "worker": 403,
                                      "admin": 200},
    ("POST", "/tasks/<task_id>/cancel"): {"nobody": 401, "owner": 409, "other": 404,
                                          "worker": 403, "admin": 409},
    ("POST", "/getnexttask"): {"nobody": 401, "owner": 403, "other": 403, "worker": 204,
                               "admin": 204},
    ("POST", "/tasks/<task_id>/heartbeat"): {"nobody": 401, "owner": 403, "other": 403,
                                             "worker": 409, "admin": 409},
    ("POST", "/puttaskresult/<task_id>"): {"nobody": 401, "owner": 403, "other": 403,
                                           "worker": 200, "admin": 200},
    ("GET", "/queues"): {"nobody": 401, "owner": 403, "other": 403, "worker": 403, "admin": 200},
    ("GET", "/healthz"): dict.fromkeys(CALLERS, 200),
    ("GET", "/openapi.json"): dict.fromkeys(CALLERS, 200),
    ("POST", "/tasks/<task_id>/release"): {"nobody": 401, "owner": 403, "other": 403,
                                           "worker": 409, "admin": 409},  # already succeeded
    ("POST", "/puttaskresults"): {"nobody": 401, "owner": 403, "other": 403, "worker": 400,
                                  "admin": 400},  # an empty body is no multipart document
    ("GET", "/activity"): {"nobody": 401, "owner": 403, "other": 403, "worker": 403, "admin": 200},
    ("GET", "/metrics"): {"nobody": 401, "owner": 403, "other": 403, "worker": 403, "admin": 200},
    ("GET", "/"): dict.fromkeys(CALLERS, 200),  # pages load without a token; their calls need one
    ("GET", "/dashboard"): dict.fromkeys(CALLERS, 200),
    ("GET", "/api/showTestPage"): dict.fromkeys(CALLERS, 200),
    ("POST", "/api/showTestPage"): dict.fromkeys(CALLERS, 200),
    ("GET", "/api/showTestPage/jquery.js"): dict.fromkeys(CALLERS, 200),
}  # fmt: skip
# The v0 functions take GET and POST alike; without their fields a permitted caller gets 400
# (tests/compat covers them with fields, v0 keys and tenants).
for _method in ("GET", "POST"):
    EXPECTED |= {
        (_method, "/api/predict_v0"): {"nobody": 401, "owner": 400, "other": 400, "worker": 403,
                                       "admin": 400},
        (_method, "/api/getresult_v0"): {"nobody": 401, "owner": 400, "other": 400,
                                         "worker": 403, "admin": 400},
        (_method, "/api/getnexttask_v0"): {"nobody": 401, "owner": 403, "other": 403,
                                           "worker": 204, "admin": 204},
        (_method, "/api/puttaskresult_v0"): {"nobody": 401, "owner": 403, "other": 403,
                                             "worker": 400, "admin": 400},
    }  # fmt: skip


def test_every_endpoint_has_a_row_in_the_role_matrix(app):
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == set(EXPECTED)


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("endpoint", list(EXPECTED), ids=" ".join)
def test_role_and_tenant_matrix(app, endpoint, caller):
    """A finished task owned by `owner`; each caller tries each endpoint on it."""
    http = app.test_client()
    task_id = submit(http, b"mine")
    _, lease = take(http)
    assert put(http, task_id, lease, b"result").status_code == 200
    method, rule = endpoint
    path = rule.replace("<task_id>", task_id)
    headers = {**CALLERS[caller], "X-Inferbox-Lease-Id": lease}
    kwargs = {"json": {"lease_id": lease}} if "heartbeat" in rule else {}
    if rule in ("/predict", "/puttaskresult/<task_id>"):
        kwargs = {"data": b"r"}
    if rule == "/predictbatch":
        body, content_type = multipart_body([({}, b"r")])
        kwargs = {"data": body, "content_type": content_type}
    if rule == "/getresults":
        kwargs = {"json": {"task_ids": [task_id]}}
    response = http.open(path, method=method, headers=headers, **kwargs)
    assert response.status_code == EXPECTED[endpoint][caller], response.data[:200]
    if response.status_code >= 400 and not rule.startswith("/api/"):  # v0 errors are plain text
        assert response.json["error"] and response.json["message"]
    if rule == "/getresults" and response.status_code == 200:  # other owners see not_found
        part, = parse_multipart(response.headers["Content-Type"], response.data)
        expected = "not_found" if caller == "other" else "succeeded"
        assert part.headers["X-Inferbox-Status"] == expected
    if caller == "other" and response.status_code == 404:  # exactly as for an unknown id
        unknown = http.open(rule.replace("<task_id>", "Q" * 22), method=method, headers=headers)
        assert unknown.json == response.json | {"message": unknown.json["message"]}


def test_another_client_cannot_wait_on_or_cancel_a_running_task(app):
    http = app.test_client()
    task_id = submit(http)
    take(http)
    assert http.get(f"/getresult/{task_id}?wait=0.2", headers=OTHER_CLIENT).status_code == 404
    assert http.post(f"/tasks/{task_id}/cancel", headers=OTHER_CLIENT).status_code == 404
    assert http.get(f"/tasks/{task_id}", headers=CLIENT).json["status"] == "running"


# -- tokens -------------------------------------------------------------------------------------


def tokens_file(tmp_path, text):
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


def test_a_worker_token_limited_to_some_queues(store, clock, tmp_path):
    digest = hashlib.sha256(b"digits-secret").hexdigest()
    path = tokens_file(tmp_path, f"worker sha256:{digest} digits-box queues=digits,img-*\n"
                                 "client app-secret app queues=digits\n")  # fmt: skip
    http = make_app(store, clock, tokens_file=path).test_client()
    limited = {"Authorization": "Bearer digits-secret"}
    app_client = {"Authorization": "Bearer app-secret"}

    for queue, allowed in (("digits", 204), ("img-cats", 204), ("other", 403),
                           ("digits,other", 403)):  # fmt: skip
        response = http.post("/getnexttask", headers=limited, query_string={"queue": queue})
        assert response.status_code == allowed, queue
    forbidden = http.post("/getnexttask", headers=limited, query_string={"queue": "other"})
    assert forbidden.json["error"] == "forbidden" and "digits, img-*" in forbidden.json["message"]

    assert http.post("/predict?queue=other", data=b"x", headers=app_client).status_code == 403
    submit(http, headers=app_client, queue="digits")
    task_id = submit(http, queue="other")  # CLIENT, unlimited
    _, lease = take(http, queue="other")  # WORKER, unlimited
    beat = http.post(f"/tasks/{task_id}/heartbeat", headers=limited, json={"lease_id": lease})
    assert beat.status_code == 403
    result = http.post(f"/puttaskresult/{task_id}", data=b"r",
                       headers={**limited, "X-Inferbox-Lease-Id": lease})  # fmt: skip
    assert result.status_code == 403
    assert put(http, task_id, lease).status_code == 200


def test_admin_tokens_cannot_be_limited_and_queue_patterns_are_checked(tmp_path):
    with pytest.raises(SettingsError, match="admin tokens cannot be limited"):
        TokenTable.from_settings(Settings(tokens_file=tokens_file(tmp_path, "admin a queues=q")))
    with pytest.raises(SettingsError, match="queues= takes queue names"):
        TokenTable.from_settings(Settings(tokens_file=tokens_file(tmp_path, "worker w queues=a/b")))


def test_tokens_may_be_stored_as_sha256_in_variables_and_files(tmp_path):
    digest = hashlib.sha256(b"ops-secret").hexdigest()
    settings = Settings.from_env({"INFERBOX_ADMIN_TOKENS": f"sha256:{digest}"})
    table = TokenTable.from_settings(settings)
    assert table.authenticate("Bearer ops-secret").role == "admin"
    with pytest.raises(SettingsError, match="64 hex digits"):
        TokenTable.from_settings(Settings(client_tokens=("sha256:abc",)))
    with pytest.raises(SettingsError, match="tokens:1"):
        TokenTable.from_settings(Settings(tokens_file=tokens_file(tmp_path, "worker sha256:xyz")))


def test_hash_token_prints_the_digest_to_store(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("gpu-secret\n"))
    assert main(["hash-token"]) == 0
    assert capsys.readouterr().out.strip() == "sha256:" + hashlib.sha256(b"gpu-secret").hexdigest()


def test_tokens_are_compared_in_constant_time(monkeypatch):
    table = TokenTable.from_settings(Settings(client_tokens=tuple(f"c{i}" for i in range(5)),
                                              worker_tokens=("w",)))  # fmt: skip
    calls = []
    compare = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("broker.auth.hmac.compare_digest", spy)
    for token in ("c0", "c4", "w", "nope"):
        calls.clear()
        with contextlib.suppress(AuthError):
            table.authenticate(f"Bearer {token}")
        assert len(calls) == 6  # every known digest, whichever matches (no early exit)
        assert all(isinstance(a, str) and len(a) == len(b) == 64 for a, b in calls)


def test_task_ids_are_128_random_bits():
    ids = [new_task_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    alphabet = set(string.ascii_letters + string.digits + "-_")
    assert all(len(i) == 22 and set(i) <= alphabet for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids[:100])
    # No structure to guess from: every position takes (nearly) every symbol.
    for position in range(21):  # the last character carries only 2 bits
        assert len({i[position] for i in ids}) == 64


# -- nothing from a request reaches a key unvalidated -------------------------------------------

HOSTILE = ["../../etc/passwd", "a/b", "x:y", "*", "q\r\nX: 1", "é", "a" * 300, " ", "%2e%2e",
           "inferbox:task:abc", "\x00"]  # fmt: skip
QUEUE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
REDIS_KEY = re.compile(
    rf"inferbox:(task:[A-Za-z0-9_-]{{22}}|queue:{QUEUE}|running:{QUEUE}|queues|seq|ttl|finished|"
    r"unrecorded|idem:t-[0-9a-f]{16}:[0-9a-f]{32}|rate:t-[0-9a-f]{16}|"
    rf"stats:{QUEUE}|hist:{QUEUE}:(queue_wait|processing|end_to_end)|finished:{QUEUE}:[0-9]+|"
    r"workers|worker:[\x20-\x7e]{1,128}|failures)"
)
BLOB_KEY = re.compile(r"inbox/[A-Za-z0-9_-]{22}|outbox/[A-Za-z0-9_-]{22}/[A-Za-z0-9_-]{16}|"
                      r"state/[A-Za-z0-9_-]{22}")  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_never_reach_a_key(store, clock, value):
    app = make_app(store, clock, submit_rate=100.0)
    http = app.test_client()
    task_id = submit(http)
    _, lease = take(http)
    attempts = [
        ("POST", "/predict", {"query_string": {"queue": value}}),
        ("POST", "/predict", {"headers": {"X-Inferbox-Queue": value}}),
        ("POST", "/predict", {"headers": {"Idempotency-Key": value}}),
        ("POST", "/predict", {"headers": {"Content-Type": value}}),
        ("POST", "/getnexttask", {"query_string": {"queue": value, "worker_id": value}}),
        ("GET", f"/tasks/{value}", {}), ("GET", f"/getresult/{value}", {}),
        ("POST", f"/tasks/{value}/cancel", {}),
        ("POST", f"/puttaskresult/{task_id}", {"headers": {"X-Inferbox-Lease-Id": value}}),
        ("POST", f"/puttaskresult/{task_id}", {"query_string": {"lease_id": value}}),
        ("POST", f"/tasks/{task_id}/heartbeat", {"json": {"lease_id": value}}),
        ("POST", f"/puttaskresult/{task_id}", {"headers": {"X-Inferbox-Lease-Id": lease,
                                                           "X-Inferbox-Model-Version": value}}),
    ]  # fmt: skip
    for method, path, kwargs in attempts:
        role = WORKER if "task" in path and "/tasks/" not in path or "heartbeat" in path \
            else CLIENT  # fmt: skip
        headers = {**role, **kwargs.pop("headers", {})}
        if "json" not in kwargs:
            kwargs["data"] = b"x"
        try:
            response = http.open(path, method=method, headers=headers, **kwargs)
        except ValueError:  # the test client itself refuses some of these (newlines in headers)
            continue
        assert response.status_code < 500, (path, value, response.data[:200])
    redis = box(app).mailbox.queue.redis
    for key in redis.keys("*"):
        assert REDIS_KEY.fullmatch(key.decode()), key
    for name in redis.smembers("inferbox:queues"):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name.decode())
    for key in store.list(""):
        assert BLOB_KEY.fullmatch(key), key


# -- CORS and security headers ------------------------------------------------------------------


def test_cors_is_off_by_default(app):
    response = app.test_client().get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = app.test_client().options("/predict", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allow_list(store, clock):
    http = make_app(store, clock, cors_origins=("https://app.example.com",)).test_client()
    allowed = http.post("/predict", data=b"x", headers={**CLIENT, "Origin": "https://app.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in allowed.headers["Vary"]
    assert "Location" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = http.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = http.options("/predict", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, idempotency-key"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


def test_cors_origins_setting_is_checked():
    settings = Settings.from_env({"INFERBOX_CORS_ORIGINS": "https://A.example.com, http://x:8080"})
    assert settings.cors_origins == ("https://a.example.com", "http://x:8080")
    with pytest.raises(SettingsError, match="not an origin"):
        Settings.from_env({"INFERBOX_CORS_ORIGINS": "https://app.example.com/"})


def test_html_pages_get_security_headers(app):
    @app.get("/test-page")
    def page() -> Response:
        return Response("<h1>hi</h1>", mimetype="text/html")

    response = app.test_client().get("/test-page")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_results_and_payloads_are_served_sandboxed(app):
    http = app.test_client()
    task_id = submit(http, b"<script>alert(1)</script>", content_type="text/html")
    got = http.post("/getnexttask", headers=WORKER)
    assert got.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    put(http, task_id, got.headers["X-Inferbox-Lease-Id"], b"<script>x</script>", "text/html")
    result = http.get(f"/getresult/{task_id}", headers=CLIENT)
    assert result.mimetype == "text/html"
    assert result.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert result.headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Frame-Options" not in result.headers  # a sandboxed blob, not a page of ours
