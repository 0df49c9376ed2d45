"""The v0 wire format and endpoints in detail: Flask's test client on fakeredis and memory storage.

The original clients themselves, over real HTTP, are in tests/compat.
"""

from __future__ import annotations

import base64
import hashlib
import os

import fakeredis
import pytest

from broker import Settings, compat, create_app
from broker.auth import CLIENT, COMPAT, WORKER, TokenTable
from broker.errors import Forbidden, InvalidRequest, SettingsError, TaskNotFound
from broker.queue import TaskQueue
from broker.task import new_task_id
from storage import open_store

KEY = "k3y/with+plus=="
OTHER_KEY = "second-function-key"
CLIENT_HEADERS = {"Authorization": "Bearer client-token"}
SENTINEL = "dGFza19pZCBub3QgZm91bmQh"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_app(clock, **overrides):
    settings = Settings(**{
        "client_tokens": ("client-token",), "worker_tokens": ("worker-token",),
        "admin_tokens": ("admin-token",), "compat_keys": (KEY, OTHER_KEY),
        "storage_url": "memory://", "max_payload_bytes": 1000, **overrides,
    })  # fmt: skip
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()), clock=clock)
    return create_app(settings, queue=queue, store=open_store("memory://"))


@pytest.fixture
def http(clock):
    return make_app(clock).test_client()


def predict(http, payload: bytes, key: str = KEY) -> str:
    answer = http.post("/api/predict_v0", query_string={"code": key},
                       data=f'{{"payload": "{b64(payload)}"}}')  # fmt: skip
    assert answer.status_code == 200, answer.data
    return answer.get_data(as_text=True)


def take(http, key: str = KEY) -> tuple[str, bytes]:
    answer = http.post("/api/getnexttask_v0", query_string={"code": key})
    assert answer.status_code == 200, answer.data
    task_id, _, payload = answer.get_data(as_text=True).partition("|")
    return task_id, base64.b64decode(payload)


def result_of(http, task_id: str, key: str = KEY) -> str:
    answer = http.get("/api/getresult_v0", query_string={"code": key, "task_id": task_id})
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


# -- bodies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (b'{"payload": "aGk=", "name": "x"}', {"payload": "aGk=", "name": "x"}),
        (b"{'payload': 'aGk='}", {"payload": "aGk="}),
        (b"{payload: 'aGk=', }", {"payload": "aGk="}),
        (b"{'a': 'it\\'s', 'b': 'say \"hi\"', 'c': '\\u00e9\\n'}",
         {"a": "it's", "b": 'say "hi"', "c": "\u00e9\n"}),
        (b"{'n': -1.5e3, 'l': [1, 'x',], 'o': {'k': null}, 'u': undefined, 't': true}",
         {"n": -1500.0, "l": [1, "x"], "o": {"k": None}, "u": None, "t": True}),
        (b"\xef\xbb\xbf{\"task_id\": \"x\"}", {"task_id": "x"}),
        (b"", {}), (b" \r\n", {}),
    ],
)  # fmt: skip
def test_bodies_parse_as_newtonsoft_read_them(raw: bytes, fields: dict) -> None:
    assert compat.parse_body(raw) == fields


@pytest.mark.parametrize(
    "raw", [b"[1]", b"'text'", b"payload=aGk%3D", b"{'a': 'x'", b"{a:}", b"{'a' 'b'}",
            b"{'a': 'x'} tail", b"{'a': '\\q'}", b"[" * 100 + b"]" * 100],
)  # fmt: skip
def test_bodies_that_are_no_json_object_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        compat.parse_body(raw)


def test_a_large_single_quoted_payload_parses() -> None:
    payload = b64(os.urandom(6 * 1024 * 1024))
    assert compat.parse_body(f"{{'payload': '{payload}'}}".encode()) == {"payload": payload}


# -- ids and base64 -------------------------------------------------------------------------------


def test_ids_map_task_ids_to_guids_and_back() -> None:
    task_id = new_task_id()
    client_id, worker_id = compat.client_id(task_id), compat.worker_id(task_id, "L-e_ase1")
    assert client_id.endswith(".payload") and len(client_id) == 36 + 8
    assert worker_id == client_id.removesuffix(".payload") + ".L-e_ase1.payload"
    assert compat.parse_id(client_id) == (task_id, None)
    assert compat.parse_id(client_id.upper().replace("PAYLOAD", "payload")) == (task_id, None)
    assert compat.parse_id(client_id.removesuffix(".payload")) == (task_id, None)
    assert compat.parse_id(worker_id) == (task_id, "L-e_ase1")
    assert compat.parse_id(task_id) == compat.parse_id(f"{task_id}.payload") == (task_id, None)


def test_a_task_id_of_another_form_is_its_own_v0_id() -> None:
    odd = "A" * 21 + "B"  # 22 base64url characters that are not 16 bytes exactly
    assert compat.client_id(odd) == odd + ".payload"
    assert compat.parse_id(odd + ".payload") == (odd, None)


@pytest.mark.parametrize(
    "text", ["", "x", ".payload", "a.b.c.payload", "0b7e.payload",
             "8b0801cd-9935-4c76-a724-2aa413bbd94c.bad lease.payload",
             "8b0801cd-9935-4c76-a724-2aa413bbd94c.a.b.payload"],
)  # fmt: skip
def test_malformed_ids_name_no_task(text: str) -> None:
    with pytest.raises(TaskNotFound):
        compat.parse_id(text)


def test_base64_reads_as_dotnet_did() -> None:
    assert compat.decode_base64("p", "aGVs\r\nbG8=", from_query=False) == b"hello"
    assert compat.decode_base64("p", "+/8= ", from_query=False) == b"\xfb\xff"
    assert compat.decode_base64("p", " /8=", from_query=True) == b"\xfb\xff"  # '+' -> ' ' in URLs
    for bad in ("aGk", "a=Gk", "aGk!", "aGk==="):
        with pytest.raises(InvalidRequest, match="p is not valid base64"):
            compat.decode_base64("p", bad, from_query=False)


@pytest.mark.parametrize("sizes", [[], [0], [1], [2, 2, 2], [5, 70_000, 1], [196_608, 196_609]])
def test_base64_chunks_match_one_shot_encoding(sizes: list[int]) -> None:
    parts = [os.urandom(size) for size in sizes]
    closed = []

    def source():
        try:
            yield from parts
        finally:
            closed.append(True)

    encoded = b"".join(compat.base64_chunks(source()))
    assert encoded == base64.b64encode(b"".join(parts))
    assert len(encoded) == compat.base64_length(sum(sizes))
    assert closed == [True]


# -- the endpoints --------------------------------------------------------------------------------


def test_round_trip_with_the_plain_text_answers(http) -> None:
    client_id = predict(http, b"\x89PNG\x00\x00")
    assert result_of(http, client_id) == SENTINEL
    worker_id, payload = take(http, OTHER_KEY)
    assert payload == b"\x89PNG\x00\x00"
    answer = http.post("/api/puttaskresult_v0", headers={"x-functions-key": KEY},
                       json={"task_id": worker_id, "result": b64(b"mask")})  # fmt: skip
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, worker_id)
    assert answer.content_type == "text/plain; charset=utf-8"
    assert base64.b64decode(result_of(http, client_id, OTHER_KEY)) == b"mask"


def test_fields_come_from_the_query_string_first(http) -> None:
    answer = http.get("/api/predict_v0", query_string={"code": KEY, "payload": b64(b"query"),
                                                       "name": "ignored"},
                      data=f'{{"payload": "{b64(b"body")}"}}')  # fmt: skip
    assert answer.status_code == 200
    assert take(http)[1] == b"query"
    plus = b"\xfb\xff\xfe"  # base64 "+//+": an unescaped '+' arrives as a space
    assert (
        http.get(
            f"/api/predict_v0?code=x&payload={b64(plus)}", headers={"x-functions-key": KEY}
        ).status_code
        == 401
    )  # code wins, and is wrong
    assert http.get(f"/api/predict_v0?payload={b64(plus)}",
                    headers={"x-functions-key": KEY}).status_code == 200  # fmt: skip
    assert take(http)[1] == plus


def test_a_form_encoded_json_body_is_read_as_json(http) -> None:
    body = f'{{"payload":"{b64(b"from jquery")}"}}'
    answer = http.post(
        "/api/predict_v0?code=" + KEY.replace("+", "%2B").replace("/", "%2F"),
        data=body,
        content_type="application/x-www-form-urlencoded; charset=UTF-8",
    )
    assert answer.status_code == 200
    assert take(http)[1] == b"from jquery"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("predict_v0", b"", "Please send the payload!"),
        ("predict_v0", b"{'name': 'x'}", "Please send the payload!"),
        ("getresult_v0", b"{}", "Please pass a task_id on the query string or in the request body"),
        ("puttaskresult_v0", b"{'task_id': 'x'}",
         "Please pass a task_id and result on the query string or in the request body"),
        ("puttaskresult_v0", b"{'result': 'aGk='}",
         "Please pass a task_id and result on the query string or in the request body"),
        ("predict_v0", b"{'payload': 'not base64!'}", "payload is not valid base64"),
        ("predict_v0", b"{'payload': 42}", "payload must be a string"),
        ("predict_v0", b"{'payload': ", "the body is not JSON: expected a value at character 11"),
    ],
)  # fmt: skip
def test_bad_requests_answer_400_in_plain_text(http, path: str, body: bytes, message: str) -> None:
    answer = http.post(f"/api/{path}", query_string={"code": KEY}, data=body)
    assert (answer.status_code, answer.get_data(as_text=True)) == (400, message)
    assert answer.content_type == "text/plain; charset=utf-8"


def test_keys(http) -> None:
    body = {"payload": b64(b"x")}
    assert http.post("/api/predict_v0", json=body).status_code == 401
    wrong = http.post("/api/predict_v0?code=wrong", json=body)
    assert (wrong.status_code, wrong.get_data(as_text=True)) == (401, "unknown function key")
    assert http.post("/api/predict_v0", json=body, headers=CLIENT_HEADERS).status_code == 200
    as_worker = http.post("/api/predict_v0?code=worker-token", json=body)
    assert (as_worker.status_code, as_worker.content_type) == (403, "text/plain; charset=utf-8")
    assert http.post("/api/getnexttask_v0?code=client-token").status_code == 403
    assert http.post("/api/getnexttask_v0?code=worker-token").status_code == 200


def test_a_compat_key_is_a_client_and_a_worker_token_on_the_native_api(http) -> None:
    bearer = {"Authorization": f"Bearer {KEY}"}
    submitted = http.post("/predict", data=b"native", headers=bearer)
    assert submitted.status_code == 202
    taken = http.post("/getnexttask", headers=bearer)
    assert taken.status_code == 200 and taken.data == b"native"
    assert http.get("/queues", headers=bearer).status_code == 403
    task_id = submitted.json["task_id"]
    assert http.get(f"/tasks/{task_id}", headers={"Authorization": f"Bearer {OTHER_KEY}"}).json[
        "status"] == "running"  # fmt: skip
    assert http.get(f"/tasks/{task_id}", headers=CLIENT_HEADERS).status_code == 404


def test_an_open_broker_needs_no_key(clock) -> None:
    http = make_app(clock, client_tokens=(), worker_tokens=(), admin_tokens=(),
                    compat_keys=()).test_client()  # fmt: skip
    client_id = predict(http, b"open", key="")
    assert take(http, key="")[1] == b"open"
    assert result_of(http, client_id, key="") == SENTINEL


def test_unknown_and_malformed_ids_get_the_sentinel(http) -> None:
    for task_id in ("8b0801cd-9935-4c76-a724-2aa413bbd94c.payload", "nonsense", new_task_id()):
        answer = http.post("/api/getresult_v0", query_string={"code": KEY},
                           json={"task_id": task_id})  # fmt: skip
        assert (answer.status_code, answer.get_data(as_text=True)) == (200, SENTINEL)
        assert answer.headers["X-Inferbox-Status"] == "unknown"


def test_empty_queue_is_204(http) -> None:
    answer = http.post("/api/getnexttask_v0", query_string={"code": KEY}, data={})
    assert (answer.status_code, answer.data) == (204, b"")


def test_a_result_for_the_client_id_completes_the_running_attempt(http) -> None:
    client_id = predict(http, b"x")
    put = {"task_id": client_id, "result": b64(b"r")}
    queued = http.post("/api/puttaskresult_v0", query_string={"code": KEY}, json=put)
    assert queued.status_code == 409 and "queued" in queued.get_data(as_text=True)
    take(http)
    for _ in range(2):  # and a repeat is harmless
        answer = http.post("/api/puttaskresult_v0", query_string={"code": KEY}, json=put)
        assert (answer.status_code, answer.get_data(as_text=True)) == (200, client_id)
    assert base64.b64decode(result_of(http, client_id)) == b"r"


def test_results_for_unknown_tasks_are_404(http) -> None:
    put = {"task_id": compat.worker_id(new_task_id(), "lease"), "result": b64(b"r")}
    answer = http.post("/api/puttaskresult_v0", query_string={"code": KEY}, json=put)
    assert answer.status_code == 404 and answer.content_type.startswith("text/plain")


def test_payload_limits(clock) -> None:
    http = make_app(clock, max_payload_bytes=600).test_client()
    assert http.post("/api/predict_v0", query_string={"code": KEY},
                     json={"payload": b64(bytes(400))}).status_code == 200  # fmt: skip
    over = http.post("/api/predict_v0", query_string={"code": KEY},
                     json={"payload": b64(bytes(450))})  # fmt: skip
    assert over.status_code == 413 and over.content_type.startswith("text/plain")


def test_a_full_queue_answers_429_in_plain_text(clock) -> None:
    http = make_app(clock, max_queue_depth=1).test_client()
    predict(http, b"first")
    full = http.post("/api/predict_v0", query_string={"code": KEY},
                     json={"payload": b64(b"second")})  # fmt: skip
    assert (full.status_code, full.content_type) == (429, "text/plain; charset=utf-8")
    assert full.get_data(as_text=True).startswith("queue default is full")
    assert int(full.headers["Retry-After"]) >= 1


def test_the_test_page_and_its_jquery_are_served_from_the_package(http) -> None:
    page = http.get("/api/showTestPage")
    assert page.status_code == 200 and page.content_type == "text/html; charset=utf-8"
    html = page.get_data(as_text=True)
    assert '<script src="showTestPage/jquery.js"></script>' in html
    assert "http://" not in html and "https://" not in html and "//code." not in html
    assert http.post("/api/showTestPage").status_code == 200
    script = http.get("/api/showTestPage/jquery.js")
    assert script.content_type == "text/javascript; charset=utf-8"
    text = script.get_data(as_text=True)
    assert "Permission is hereby granted, free of charge" in text[:2000]
    assert "/*! jQuery v3.7.1 | (c) OpenJS Foundation" in text
    again = http.get(
        "/api/showTestPage/jquery.js", headers={"If-None-Match": script.headers["ETag"]}
    )
    assert again.status_code == 304


def test_the_test_page_may_run_its_own_inline_script_and_style_only(http) -> None:
    page = http.get("/api/showTestPage")
    html = page.get_data(as_text=True)
    policy = dict(item.strip().split(" ", 1) for item in
                  page.headers["Content-Security-Policy"].split(";"))  # fmt: skip
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        inline = html.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert policy[directive] == f"'self' 'sha256-{digest}'"
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'" and page.headers["X-Frame-Options"] == "DENY"


# -- settings and roles ---------------------------------------------------------------------------


def test_compat_settings_from_the_environment() -> None:
    settings = Settings.from_env({"INFERBOX_COMPAT_KEYS": "a, b", "INFERBOX_COMPAT_QUEUE": "v0",
                                  "INFERBOX_COMPAT_LEASE": "300"})  # fmt: skip
    assert (settings.compat_keys, settings.compat_queue, settings.compat_lease) == (
        ("a", "b"), "v0", 300)  # fmt: skip
    assert settings.has_tokens
    defaults = Settings.from_env({})
    assert (defaults.compat_queue, defaults.compat_lease, defaults.has_tokens) == (
        "default", 60, False)  # fmt: skip
    for name, value in (("COMPAT_QUEUE", "no spaces"), ("COMPAT_LEASE", "0")):
        with pytest.raises(SettingsError, match=f"INFERBOX_{name}"):
            Settings.from_env({f"INFERBOX_{name}": value})


def test_compat_keys_share_one_owner_and_hold_both_roles(tmp_path) -> None:
    path = tmp_path / "tokens"
    path.write_text("compat from-the-file\n")
    table = TokenTable.from_settings(Settings(compat_keys=("a", "b"), tokens_file=path))
    owners = {table.authenticate(f"Bearer {key}").owner for key in ("a", "b", "from-the-file")}
    assert owners == {"compat"}
    principal = table.authenticate("Bearer a")
    assert principal.role == COMPAT
    principal.require(CLIENT)
    principal.require(WORKER)
    with pytest.raises(Forbidden):
        principal.require("admin")
