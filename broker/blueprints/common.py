"""Helpers the blueprints share: the request's principal, options, JSON bodies."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

from flask import current_app, request
from werkzeug.exceptions import ClientDisconnected

from storage import Blob

from ..auth import Principal
from ..errors import InvalidOption, InvalidRequest

T = TypeVar("T")

if TYPE_CHECKING:
    from ..app import Inferbox
    from ..mailbox import Mailbox
    from ..task import Task


def box() -> Inferbox:
    return current_app.extensions["inferbox"]  # type: ignore[no-any-return]


def mailbox() -> Mailbox:
    return box().mailbox


def authorize(*roles: str) -> Principal:
    """The caller, who must hold one of ``roles`` (admins hold them all)."""
    principal = box().tokens.authenticate(request.headers.get("Authorization"))
    principal.require(*roles)
    return principal


def owner_filter(principal: Principal) -> str | None:
    """Whose tasks the principal may see: None for all."""
    return None if principal.sees_all else principal.owner


def option(
    name: str, header: str | None = None, body: dict[str, Any] | None = None,
    check: Callable[[Any], T] = lambda raw: raw,
) -> T:
    """An option from the JSON body, else the query string, else a header, passed through
    ``check`` (which also gets None when the option is absent).

    An option given in several places must be valid in each: the first wins, but a bad value
    elsewhere is refused rather than silently ignored.
    """
    found = []
    if body and name in body:
        if body[name] is None:
            raise InvalidOption(f"{name} must not be null (leave it out for the default)")
        found.append(body[name])
    if name in request.args:
        found.append(request.args[name])
    if header and header in request.headers:
        found.append(request.headers[header])
    checked = [check(value) for value in found]
    return checked[0] if checked else check(None)


def result_headers(task: Task) -> dict[str, str]:
    """The headers that go with a task's result bytes: its id, and the model version when the
    worker named one."""
    headers = {"X-Inferbox-Task-Id": task.id}
    if task.model_version:
        headers["X-Inferbox-Model-Version"] = task.model_version
    return headers


def known_query(*names: str) -> None:
    """Refuse query parameters other than ``names``: a misspelt option is an error, not a
    silently applied default."""
    _refuse_unknown("query parameter", request.args, names)


def known_fields(body: dict[str, Any], *names: str) -> None:
    """Refuse fields of a JSON body other than ``names``, as ``known_query`` does."""
    _refuse_unknown("field", body, names)


def _refuse_unknown(what: str, given: Iterable[str], names: tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(names))
    if unknown:
        takes = ", ".join(names) if names else "none"
        raise InvalidOption(f"unknown {what} {unknown[0][:64]!r} (this endpoint takes: "
                            f"{takes})")  # fmt: skip


def json_body(max_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The request's JSON object body, or {} when it has none."""
    if not request.content_length and not request.is_json:
        return {}
    if request.content_length and request.content_length > max_bytes:
        raise InvalidRequest(f"the JSON body must be at most {max_bytes} bytes")
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON body must be an object")
    return body


class _WholeBody(io.RawIOBase):
    """The request body, refusing to end before its Content-Length.

    Under gunicorn a client that disconnects mid-body looks like a body that simply ended: the
    bytes so far, then EOF. Stored as they are, they would become a truncated payload or result.
    Ending early instead raises ClientDisconnected inside the store's put, which then keeps
    nothing.
    """

    def __init__(self, stream: IO[bytes], length: int | None) -> None:
        self._stream, self._left = stream, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer) if self._left is None else min(len(buffer), self._left)
        if want == 0:
            return 0
        try:
            data = self._stream.read(want)
        except OSError as exc:  # gunicorn's NoMoreData for a chunked body cut short
            raise ClientDisconnected() from exc
        if not data and self._left:
            raise ClientDisconnected()
        if self._left is not None:
            self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def request_body() -> IO[bytes]:
    """The request's body as a stream that fails rather than ends early (see _WholeBody)."""
    return io.BufferedReader(_WholeBody(request.stream, request.content_length))


def stream_blob(blob: Blob) -> Iterator[bytes]:
    """Yield the blob's bytes and close it, also when the client goes away early."""
    try:
        yield from blob.iter_chunks()
    finally:
        blob.close()
