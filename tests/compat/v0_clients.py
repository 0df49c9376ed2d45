"""The original clients of the four functions, as they behave on the wire, for the tests to play.

- :class:`CSharpClient`: the WinForms desktop app (``Form1.cs``). It POSTs single-quoted
  pseudo-JSON, ``"{'payload': '" + base64 + "'}"``, as ``StringContent(..., Encoding.UTF8,
  "application/json")`` through .NET Framework's ``HttpClient``, which sends ``Expect:
  100-continue`` and waits for the ``100 Continue`` before the body, on a kept-alive connection.
  Its PNG comes from ``MemoryStream.GetBuffer()``, the stream's whole buffer: the image plus the
  zero bytes of unused capacity. Spoken here over a raw socket, byte for byte.
- The Python notebook worker (``MLServer - Compact Form.ipynb``): ``requests.post(url, data={})``
  to fetch, split on ``|``, base64-decode, and ``requests.post(url, json=...)`` of the base64
  result; any exception while fetching means "No task available".
- The jQuery test page is played by a real browser (``test_test_page.py``).
"""

from __future__ import annotations

import base64
import socket
import struct
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

SENTINEL = "dGFza19pZCBub3QgZm91bmQh"

# -- PNGs ---------------------------------------------------------------------------------------


def png(width: int, height: int, pixel: Callable[[int, int], int]) -> bytes:
    """An 8-bit grayscale PNG whose pixel (x, y) is ``pixel(x, y)``."""
    rows = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))  # fmt: skip


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, as an image library reads it: bytes after IEND are ignored."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def memory_stream_buffer(data: bytes) -> bytes:
    """What ``MemoryStream.GetBuffer()`` returns after ``data`` was written: the whole buffer,
    whose capacity starts at 256 bytes and doubles, so unused capacity shows as zero bytes."""
    capacity = 256
    while capacity < len(data):
        capacity *= 2
    return data + bytes(capacity - len(data))


# -- the C# desktop client ------------------------------------------------------------------------


class CSharpClient:
    """Form1's two buttons, as .NET Framework's HttpClient puts them on the wire."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send_predict(self, predict_endpoint: str, png_buffer: bytes) -> str:
        """btnSendPredict_Click: the label shows the response string, the task id."""
        content = "{'payload': '" + base64.b64encode(png_buffer).decode() + "'}"
        return self.post_string_content(predict_endpoint, content)[2]

    def get_results(self, results_endpoint: str, task_id: str) -> bytes | None:
        """btnGetResults_Click: the mask bytes, or None where it shows "Task result not found"."""
        content = "{'task_id': '" + task_id + "'}"
        response_string = self.post_string_content(results_endpoint, content)[2]
        if response_string == SENTINEL:
            return None
        return base64.b64decode(response_string)

    def post_string_content(self, url: str, content: str) -> tuple[int, dict[str, str], str]:
        """``client.PostAsync(url, new StringContent(content, Encoding.UTF8,
        "application/json"))`` then ``ReadAsStringAsync()``: (status, headers, string)."""
        parts = urlsplit(url)
        body = content.encode("utf-8")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        first = self._sock is None
        if first:
            self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
            self._reader = self._sock.makefile("rb")
        head = (f"POST {target} HTTP/1.1\r\n"
                "Content-Type: application/json; charset=utf-8\r\n"
                f"Host: {parts.netloc}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Expect: 100-continue\r\n"
                + ("Connection: Keep-Alive\r\n" if first else "")
                + "\r\n")  # fmt: skip
        assert self._sock is not None
        self._sock.sendall(head.encode("ascii"))
        interim = self._read_head()
        assert interim[0] == 100, f"expected 100 Continue before the body, got {interim}"
        self._sock.sendall(body)
        status, headers = self._read_head()
        data = self._read_body(headers)
        if headers.get("connection", "").lower() == "close":
            self.close()
        charset = headers.get("content-type", "").partition("charset=")[2] or "utf-8"
        return status, headers, data.decode(charset)

    def _read_head(self) -> tuple[int, dict[str, str]]:
        status_line = self._reader.readline().decode("latin-1")
        status = int(status_line.split()[1])
        headers = {}
        while (line := self._reader.readline().decode("latin-1")) not in ("\r\n", "\n", ""):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while size := int(self._reader.readline().split(b";")[0], 16):
                data += self._reader.read(size)
                self._reader.readline()
            self._reader.readline()
            return data
        return bytes(self._reader.read(int(headers.get("content-length", "0"))))


# -- the Python notebook worker -------------------------------------------------------------------


def get_next_task(url: str) -> dict[str, Any]:
    r = requests.post(url, data={})
    split_data = r.text.split("|")
    return {"task_id": split_data[0], "payload": base64.b64decode(split_data[1])}


def send_task_result(url: str, task_id: str, result_b64: bytes) -> requests.Response:
    x = result_b64.decode("utf8")
    return requests.post(url, json={"task_id": task_id, "result": x})


def perform_next_task(
    getnexttask_url: str, puttaskresult_url: str, model: Callable[[bytes], bytes],
    log: Callable[[str], None] = print,
) -> requests.Response | None:  # fmt: skip
    """One pass of the notebook's loop; ``model`` stands in for DeepLab (PNG in, mask PNG out)."""
    try:
        next_task = get_next_task(getnexttask_url)
        log("Computing task {}".format(next_task["task_id"]))
    except Exception:  # the notebook's bare except: any failure means there is no task
        log("No task available")
        return None
    mask_png = model(next_task["payload"])
    encoded_string = base64.b64encode(mask_png)
    return send_task_result(puttaskresult_url, next_task["task_id"], encoded_string)


def segmentation_model(image: bytes) -> bytes:
    """A stand-in for the notebook's DeepLab: a label mask PNG the size of the input image."""
    width, height = png_size(image)
    return png(width, height, lambda x, y: (x // 8 + y // 8) % 21)
