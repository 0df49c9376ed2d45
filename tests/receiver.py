"""A real webhook receiver on a loopback port, for the webhook tests."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Delivery = tuple[dict[str, str], bytes, str]  # headers, body, path


class Receiver:
    """Records every POST; answers ``status`` (with ``location`` for a redirect).

    Until ``start`` it is down: its port is bound but not listening, so a delivery is refused
    at once and no other process can take the port meanwhile.
    """

    def __init__(self, *, status: int = 204, location: str = "") -> None:
        self._socket: socket.socket | None = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.status = status
        self.location = location
        self.received: list[Delivery] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/inferbox?source=test"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._changed:
                    receiver.received.append((dict(self.headers.items()), body, self.path))
                    receiver._changed.notify_all()
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        if self._socket is None:
            raise RuntimeError("a stopped Receiver cannot start again")
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket, self._socket = self._socket, None
        server.server_name, server.server_port = "127.0.0.1", self.port
        server.server_activate()  # listen: from now on it is up
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._socket is not None:  # never started
            self._socket.close()
            self._socket = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.received)} deliveries, expected {count}")
                self._changed.wait(remaining)
            return list(self.received)
