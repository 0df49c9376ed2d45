"""parse_multipart: RFC 2046 multipart/mixed, binary-safe, as the take answer uses it."""

from __future__ import annotations

import random

import pytest

from client_sdk.errors import ProtocolError
from client_sdk.http import parse_multipart

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/mixed; boundary={BOUNDARY}"


def build(parts: list[tuple[dict[str, str], bytes]], boundary: str = BOUNDARY) -> bytes:
    """A reference encoder: each part is '--boundary CRLF headers CRLF body', then the close."""
    out = b""
    for headers, body in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        out += f"--{boundary}\r\n{head}\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def task_headers(task_id: str, content_type: str = "application/octet-stream") -> dict:
    return {
        "Content-Type": content_type,
        "X-Inferbox-Task-Id": task_id,
        "X-Inferbox-Lease-Id": f"L-{task_id}",
    }


def test_one_part() -> None:
    body = build([(task_headers("T1", "application/json"), b'{"a": 1}')])
    [part] = parse_multipart(CONTENT_TYPE, body)
    assert part.body == b'{"a": 1}'
    assert part.content_type == "application/json"
    assert part.headers["x-inferbox-task-id"] == "T1"  # header names are case-insensitive


def test_several_parts_with_binary_bodies_that_look_like_delimiters() -> None:
    bodies = [
        b"line one\r\nline two\r\n",
        b"--\r\n--\r\n\r\n",
        b"\r\n--b0undar\r\n--b0undaryX\r\n--b0undary-not-really\r\n",
        bytes(range(256)) * 3,
        b"",
        b"\r\n",
    ]
    parts = parse_multipart(
        CONTENT_TYPE, build([(task_headers(f"T{i}"), b) for i, b in enumerate(bodies)])
    )
    assert [part.body for part in parts] == bodies
    assert [part.headers["X-Inferbox-Task-Id"] for part in parts] == [f"T{i}" for i in range(6)]


def test_random_binary_bodies_round_trip() -> None:
    rng = random.Random(7)
    alphabet = [b"\r", b"\n", b"-", b"--", b"\r\n", b"b0und", b"\x00", b"\xff", b"x"]
    delimiter = f"\r\n--{BOUNDARY}".encode()
    for _ in range(200):
        bodies = []
        for _ in range(rng.randint(1, 4)):
            body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
            assert delimiter not in body  # RFC 2046: the sender picks a boundary not in the data
            bodies.append(body)
        parts = parse_multipart(CONTENT_TYPE, build([({"Content-Type": "x/y"}, b) for b in bodies]))
        assert [part.body for part in parts] == bodies


def test_preamble_epilogue_padding_and_quoted_boundary() -> None:
    boundary = "simple boundary'()+_,-./:=?"
    body = (
        b"This is the preamble, ignored.\r\n"
        + f"--{boundary}  \t\r\n".encode()  # transport padding after the delimiter
        + b"Content-Type: text/plain\r\n\r\nfirst\r\n"
        + f"--{boundary}\r\n".encode()
        + b"\r\nsecond, no headers\r\n"
        + f"--{boundary}--\r\nThis is the epilogue, ignored.\r\n".encode()
    )
    parts = parse_multipart(f'multipart/mixed; boundary="{boundary}"', body)
    assert [part.body for part in parts] == [b"first", b"second, no headers"]
    assert len(parts[1].headers) == 0
    assert parts[1].content_type == "text/plain; charset=us-ascii"  # RFC 2046 default


def test_a_part_may_be_headers_only() -> None:
    body = b"--b\r\nX-Inferbox-Task-Id: T1\r\nContent-Length: 0\r\n--b--"
    [part] = parse_multipart("multipart/mixed; boundary=b", body)
    assert (part.headers["X-Inferbox-Task-Id"], part.body) == ("T1", b"")


def test_folded_header_lines_are_joined() -> None:
    body = b"--b\r\nX-Long: one\r\n two\r\n\r\npayload\r\n--b--"
    [part] = parse_multipart("multipart/mixed; boundary=b", body)
    assert part.headers["X-Long"] == "one two"
    assert part.body == b"payload"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/mixed", build([({}, b"x")])),  # no boundary parameter
        ("application/json", b"{}"),  # not multipart at all
        (CONTENT_TYPE, build([({}, b"x")])[: -len(f"--{BOUNDARY}--\r\n")]),  # truncated
        (CONTENT_TYPE, b"no delimiter anywhere"),
        (CONTENT_TYPE, f"--{BOUNDARY}\r\nno blank line after headers\r\n--{BOUNDARY}--".encode()),
    ],
)
def test_malformed_messages_raise_protocol_error(content_type: str, body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_multipart(content_type, body)
