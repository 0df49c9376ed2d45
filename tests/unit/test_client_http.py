"""client_sdk.http, codec and backoff: sessions, error mapping, content types, encodings."""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
import responses

from client_sdk import errors
from client_sdk.backoff import Backoff
from client_sdk.codec import decode, encode
from client_sdk.http import (
    make_session,
    parse_content_type,
    raise_for_error,
    send,
    task_url,
)

URL = "http://broker.test/tasks/abc"


def _response(status: int, body: object) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    if isinstance(body, (dict, list)):
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
    else:
        response._content = str(body).encode()
        response.headers["Content-Type"] = "text/html"
    response.url = URL
    return response


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid_option", errors.BadRequest),
        (401, "unauthorized", errors.AuthError),
        (403, "forbidden", errors.AuthError),
        (404, "not_found", errors.NotFound),
        (409, "task_finished", errors.Conflict),
        (409, "lease_lost", errors.LeaseLost),
        (413, "payload_too_large", errors.PayloadTooLarge),
        (415, "unsupported_media_type", errors.APIError),
        (500, "internal", errors.BrokerUnavailable),
        (503, "unavailable", errors.BrokerUnavailable),
    ],
)
def test_error_answers_map_to_their_exception(
    status: int, code: str, expected: type[errors.APIError]
) -> None:
    with pytest.raises(expected) as caught:
        raise_for_error(_response(status, {"error": code, "message": "what is wrong"}))
    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert caught.value.error == code
    assert caught.value.message == "what is wrong"
    assert caught.value.body == {"error": code, "message": "what is wrong"}


def test_a_non_json_gateway_error_still_maps_and_keeps_the_text() -> None:
    with pytest.raises(errors.BrokerUnavailable) as caught:
        raise_for_error(_response(502, "<html>Bad Gateway</html>"))
    assert caught.value.error == "http_502"
    assert "Bad Gateway" in caught.value.message


@pytest.mark.parametrize("status", [200, 202, 204])
def test_success_answers_do_not_raise(status: int) -> None:
    raise_for_error(_response(status, {}))


def test_session_sends_bearer_token_and_user_agent() -> None:
    session = make_session("s3cret")
    assert session.headers["Authorization"] == "Bearer s3cret"
    assert session.headers["User-Agent"].startswith("inferbox/")
    assert "Authorization" not in make_session(None).headers


def test_session_for_one_broker_reads_the_environment_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp-ca.pem")
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine broker.test login alice password pw\n")
    monkeypatch.setenv("NETRC", str(netrc))
    session = make_session(None, base_url="https://broker.test")
    assert not session.trust_env  # nothing is looked up per request any more
    assert session.proxies["https"] == "http://proxy.corp:3128"
    assert session.verify == "/etc/corp-ca.pem"
    assert session.auth == ("alice", "pw")
    assert make_session("t0ken", base_url="https://broker.test").auth is None  # bearer wins
    assert make_session(None, base_url="https://internal.test").proxies == {}  # NO_PROXY


def test_session_retries_only_idempotent_methods_on_gateway_errors() -> None:
    retry = make_session(retries=4).get_adapter("https://broker.test").max_retries
    assert retry.total == 4
    assert retry.connect == 4
    assert set(retry.status_forcelist) == {502, 503, 504}
    assert set(retry.allowed_methods) == {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
    assert not retry.raise_on_status
    assert retry.backoff_factor > 0
    if hasattr(retry, "backoff_jitter"):
        assert retry.backoff_jitter > 0


@responses.activate
def test_connection_failure_becomes_broker_unavailable() -> None:
    responses.add(responses.GET, URL, body=requests.ConnectionError("refused"))
    with pytest.raises(errors.BrokerUnavailable) as caught:
        send(requests.Session(), "GET", URL, timeout=1)
    assert caught.value.status_code is None
    assert isinstance(caught.value.__cause__, requests.ConnectionError)


class Scripted:
    """A real HTTP/1.1 server on a loopback port: answers each request with the next of
    ``answers`` (status, headers), the last one again once they run out, and records what
    came (method, path, headers, body, the client's port)."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, dict[str, str], bytes, int]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the broker's server

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                scripted.seen.append((self.command, self.path, dict(self.headers.items()),
                                      body, self.client_address[1]))  # fmt: skip
                index = min(len(scripted.seen), len(scripted.answers)) - 1
                status, headers = scripted.answers[index]
                reply = json.dumps({"n": len(scripted.seen)}).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted([(200, {})])
    yield server
    server.close()


def test_a_settled_session_sends_headers_params_and_json_and_keeps_its_connection(
    scripted: Scripted,
) -> None:
    session = make_session("s3cret", base_url=scripted.url)
    url = task_url(scripted.url, "getnexttask")
    first = send(session, "POST", url, params={"queue": "q a", "wait": 5, "ttl": None},
                 json={"ids": ["a"]}, headers={"X-Extra": "1"}, timeout=5)  # fmt: skip
    second = send(session, "GET", task_url(scripted.url, "healthz"), timeout=5)
    assert (first.status_code, first.json(), second.json()) == (200, {"n": 1}, {"n": 2})
    (method, path, headers, body, port), (_, _, again, _, port_again) = scripted.seen
    assert (method, path) == ("POST", "/getnexttask?queue=q+a&wait=5")
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["User-Agent"].startswith("inferbox/")
    assert (headers["X-Extra"], headers["Content-Type"]) == ("1", "application/json")
    assert json.loads(body) == {"ids": ["a"]}
    assert "X-Extra" not in again  # a call's headers are its own, not the session's
    assert port_again == port  # one keep-alive connection for both


def test_a_settled_session_without_a_token_sends_its_netrc_credentials(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login alice password pw\n")
    monkeypatch.setenv("NETRC", str(netrc))
    session = make_session(None, base_url=scripted.url)
    send(session, "GET", task_url(scripted.url, "healthz"), timeout=5)
    assert scripted.seen[0][2]["Authorization"] == "Basic YWxpY2U6cHc="  # alice:pw


def test_a_settled_session_sends_through_the_proxy_the_environment_names(
    scripted: Scripted, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy"):  # the scripted server plays the proxy
        monkeypatch.setenv(name, scripted.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = make_session("s3cret", base_url="http://broker.test")
    response = send(session, "GET", task_url("http://broker.test", "tasks", "t1"), timeout=5)
    assert response.json() == {"n": 1}
    method, path, headers, _, _ = scripted.seen[0]
    assert (method, path) == ("GET", "http://broker.test/tasks/t1")  # absolute: a proxy request
    assert headers["Authorization"] == "Bearer s3cret"


def test_a_settled_session_retries_a_gateway_error_of_an_idempotent_call() -> None:
    server = Scripted([(503, {}), (200, {})])
    try:
        session = make_session(None, retries=1, base_url=server.url)
        response = send(session, "GET", task_url(server.url, "tasks", "t1"), timeout=5)
    finally:
        server.close()
    assert (response.status_code, response.json(), len(server.seen)) == (200, {"n": 2}, 2)


def test_a_redirect_is_not_followed_and_its_error_names_where_it_points() -> None:
    server = Scripted([(307, {"Location": "https://elsewhere.test/predict"})])
    try:
        session = make_session("s3cret", base_url=server.url)
        response = send(session, "POST", task_url(server.url, "predict"), data=b"{}",
                        timeout=5)  # fmt: skip
    finally:
        server.close()
    assert (response.status_code, len(server.seen)) == (307, 1)  # not followed
    with pytest.raises(errors.APIError) as caught:
        raise_for_error(response)
    assert caught.value.status_code == 307
    assert "https://elsewhere.test/predict" in caught.value.message
    assert "does not follow redirects" in caught.value.message


def test_task_url_encodes_each_segment() -> None:
    assert task_url("http://b.test/", "tasks", "a/b c", "cancel") == (
        "http://b.test/tasks/a%2Fb%20c/cancel"
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, ("", {})),
        ("application/json", ("application/json", {})),
        ("Text/Plain; Charset=UTF-8", ("text/plain", {"charset": "UTF-8"})),
        (
            'multipart/mixed; boundary="a;b \\"c\\""; x=1',
            ("multipart/mixed", {"boundary": 'a;b "c"', "x": "1"}),
        ),
    ],
)
def test_parse_content_type(header: str | None, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(header) == expected


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        (b"\x00\xff", b"\x00\xff", "application/octet-stream"),
        ("héllo", "héllo".encode(), "text/plain; charset=utf-8"),
        ({"a": [1, 2.5, None]}, b'{"a":[1,2.5,null]}', "application/json"),
        ([True], b"[true]", "application/json"),
        (7, b"7", "application/json"),
        (None, b"null", "application/json"),
    ],
)
def test_encode_pairs_types_with_content_types(
    value: object, body: bytes, content_type: str
) -> None:
    assert encode(value) == (body, content_type)


def test_encode_numpy_array_as_npy_and_numpy_scalars_as_json() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, content_type = encode(array)
    assert content_type == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), array)
    assert encode({"p": np.float32(0.5), "k": np.int64(3)}).body == b'{"p":0.5,"k":3}'


def test_encode_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(TypeError, match="cannot encode a set"):
        encode({1, 2})
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"a":1}', "application/json", {"a": 1}),
        (b'{"a":1}', "application/problem+json; charset=utf-8", {"a": 1}),
        ("héllo".encode("latin-1"), "text/plain; charset=latin-1", "héllo"),
        ("héllo".encode(), "text/csv", "héllo"),
        (b"\x89PNG", "image/png", b"\x89PNG"),
        (b"raw", None, b"raw"),
    ],
)
def test_decode_goes_by_content_type(
    body: bytes, content_type: str | None, expected: object
) -> None:
    assert decode(body, content_type) == expected


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, never in lockstep
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 0.5
    for _ in range(2000):  # no overflow however long the outage
        assert backoff.next_delay() <= 4.0
