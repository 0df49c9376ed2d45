"""Where the SDK meets HTTP: sessions, error mapping, URL building and ``multipart/mixed``.

Everything ``requests`` or ``urllib3`` can raise for a failed exchange is turned into
``client_sdk.errors`` here, so the client and the worker only ever see inferbox errors.
"""

from __future__ import annotations

import email.utils
import inspect
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import Any
from urllib.parse import quote, urlencode

import requests
from requests.adapters import HTTPAdapter
from requests.hooks import dispatch_hook
from requests.structures import CaseInsensitiveDict
from urllib3.util.retry import Retry

from client_sdk.errors import (
    APIError,
    AuthError,
    BadRequest,
    BrokerUnavailable,
    Conflict,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    TooManyRequests,
)

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "Part",
    "error_from_response",
    "json_document",
    "make_session",
    "multipart_body",
    "parse_content_type",
    "parse_multipart",
    "raise_for_error",
    "retry_after_seconds",
    "send",
    "task_url",
    "user_agent",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({502, 503, 504})

_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: TooManyRequests,
}

# Failures of the exchange itself (no usable answer), as opposed to usage errors like a bad URL.
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    requests.exceptions.RetryError,
)


def user_agent() -> str:
    """The ``User-Agent`` every SDK request carries: ``inferbox/<installed version>``."""
    try:
        version = metadata.version("inferbox")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"inferbox/{version}"


def _retry_policy(retries: int) -> Retry:
    """urllib3 retries for transient failures; only idempotent methods are retried on a
    read error or a 502/503/504 (a connection that never opened is safe to retry for any
    method, and urllib3 does so)."""
    options: dict[str, Any] = {
        "total": retries,
        "connect": retries,
        "read": retries,
        "status": retries,
        "other": 0,
        "allowed_methods": IDEMPOTENT_METHODS,
        "status_forcelist": RETRY_STATUSES,
        "backoff_factor": 0.5,
        "backoff_max": 10.0,
        "backoff_jitter": 0.5,
        "raise_on_status": False,
        "respect_retry_after_header": True,
    }
    supported = inspect.signature(Retry.__init__).parameters
    return Retry(**{name: value for name, value in options.items() if name in supported})


def make_session(
    token: str | None = None, *, retries: int = 3, pool_size: int = 10,
    base_url: str | None = None,
) -> requests.Session:  # fmt: skip
    """A ``requests.Session`` set up for an inferbox broker.

    It sends ``Authorization: Bearer <token>`` when a token is given and a
    ``User-Agent: inferbox/<version>``, and retries connection failures, and for idempotent
    methods read errors and 502/503/504, up to ``retries`` times with jittered exponential
    backoff. After the last retry a 5xx answer is returned as is (``raise_for_error`` turns
    it into ``BrokerUnavailable``). ``pool_size`` connections are kept per host, for callers
    that share the session between threads.

    With ``base_url`` (a session that only talks to that broker) the environment's proxy,
    CA bundle and ``.netrc`` settings for it are read once, here, instead of on every request.
    """
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=_retry_policy(retries), pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    if base_url:
        _settle_environment(session, base_url, token)
    return session


def _settle_environment(session: requests.Session, base_url: str, token: str | None) -> None:
    """Resolve what ``trust_env`` would look up per request, once (a fifth of the SDK's CPU
    per request goes to those lookups otherwise): proxies for ``base_url`` (``NO_PROXY``
    honoured), ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, and ``.netrc`` credentials when no
    token is given."""
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    if not token:
        session.auth = requests.utils.get_netrc_auth(base_url)
    session.trust_env = False


def task_url(base_url: str, *segments: str) -> str:
    """``base_url`` joined with each segment, each percent-encoded as one path segment."""
    path = "/".join(quote(segment, safe="") for segment in segments)
    return f"{base_url.rstrip('/')}/{path}"


def send(
    session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: Any
) -> requests.Response:
    """One exchange with transport failures raised as ``BrokerUnavailable``.

    A session ``make_session`` settled for its broker (``trust_env`` off) skips what
    ``Session.request`` redoes on every call and the SDK does not use (merging per-request
    settings into the session's, the cookie jar, per-request hooks, redirects): the request is
    prepared here and handed straight to the session's mounted adapter, retries and pool
    included; the session's own response hooks still run. That is about a quarter less of the
    SDK's CPU a call. A redirect comes back as it was answered (``raise_for_error`` names where
    it points). Any other session goes through ``session.request``.

    The answer is returned whatever its status; pair with ``raise_for_error``.
    """
    try:
        if session.trust_env:
            return session.request(method, url, timeout=timeout, **kwargs)
        return _send_prepared(session, method, url, timeout=timeout, **kwargs)
    except _TRANSPORT_ERRORS as exc:
        message = f"{method} {url} failed: {exc}"
        raise BrokerUnavailable(message, error="unavailable") from exc


def _send_prepared(
    session: requests.Session, method: str, url: str, *, timeout: float, stream: bool = False,
    headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
    **body: Any,
) -> requests.Response:  # fmt: skip
    """``method url`` on a settled session: ``body`` is ``data`` and/or ``json``. ``params``
    (a flat mapping; ``None`` values left out, as ``requests`` does) is encoded here."""
    if params:
        query = urlencode([(name, value) for name, value in params.items() if value is not None])
        url = f"{url}{'&' if '?' in url else '?'}{query}" if query else url
    merged = {**session.headers, **headers} if headers else session.headers  # prepare() copies
    prepared = requests.PreparedRequest()
    prepared.prepare(method=method, url=url, headers=merged, auth=session.auth, **body)
    proxies = session.rebuild_proxies(prepared, session.proxies) if session.proxies else {}
    response = session.get_adapter(url).send(
        prepared, stream=stream, timeout=timeout, verify=session.verify, cert=session.cert,
        proxies=proxies,
    )  # fmt: skip
    if session.hooks["response"]:  # the session's response hooks still see every answer
        response = dispatch_hook("response", session.hooks, response)
    if not stream:
        response.content  # noqa: B018 - read the body now, so the connection goes back to the pool
    return response


def _error_body(response: requests.Response) -> Any:
    """The body decoded as JSON when it is JSON, else its text (``None`` when empty)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def error_from_response(response: requests.Response) -> APIError:
    """The ``APIError`` subclass that a non-2xx answer stands for (see ``errors``)."""
    body = _error_body(response)
    status = response.status_code
    error, message = f"http_{status}", response.reason or ""
    if isinstance(body, dict):
        error = str(body.get("error") or error)
        message = str(body.get("message") or message)
    elif isinstance(body, str):
        message = body[:500]
    if 300 <= status < 400:  # ``send`` does not follow redirects: say where this one points
        where = response.headers.get("Location") or "nowhere given"
        message = (f"{response.url} answered {status} {response.reason or 'redirect'} to "
                   f"{where}; inferbox does not follow redirects: use the broker's own URL")
    if error == "lease_lost":
        cls: type[APIError] = LeaseLost
    elif status >= 500:
        cls = BrokerUnavailable
    else:
        cls = _BY_STATUS.get(status, APIError)
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return cls(message, status_code=status, error=error, body=body, retry_after=retry_after)


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header (delay seconds or an HTTP date) as seconds from now, >= 0."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def raise_for_error(response: requests.Response) -> None:
    """Return quietly on a 2xx answer; raise the matching ``APIError`` for anything else."""
    if not 200 <= response.status_code < 300:
        raise error_from_response(response)


def json_document(response: requests.Response) -> dict[str, Any]:
    """The answer's body as a JSON object; ``ProtocolError`` when it is anything else."""
    try:
        document = response.json()
    except ValueError as exc:
        raise ProtocolError(f"expected a JSON object from {response.url}") from exc
    if not isinstance(document, dict):
        raise ProtocolError(f"expected a JSON object from {response.url}")
    return document


_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``'Text/Plain; charset="utf-8"'`` -> ``('text/plain', {'charset': 'utf-8'})``.

    The media type and parameter names are lower-cased, quoted values unquoted; a missing
    header gives ``('', {})``.
    """
    if not value:
        return "", {}
    media_type, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for name, raw in _PARAM.findall(";" + rest):
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name.lower()] = raw
    return media_type.strip().lower(), params


@dataclass(frozen=True)
class Part:
    """One body part of a ``multipart/mixed`` message: its headers and its raw bytes."""

    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        """The part's ``Content-Type``, with RFC 2046's default when it has none."""
        return self.headers.get("Content-Type") or "text/plain; charset=us-ascii"


def _boundary(content_type: str) -> bytes:
    media_type, params = parse_content_type(content_type)
    if not media_type.startswith("multipart/"):
        raise ProtocolError(f"expected a multipart body, got {content_type!r}")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise ProtocolError(f"missing or invalid multipart boundary in {content_type!r}")
    return boundary.encode("latin-1")


def _delimiter_end(body: bytes, after: int) -> int | None:
    """Where the line after a ``--boundary`` match ends, or ``None`` if it is not a delimiter.

    A real delimiter is followed by ``--`` (the close delimiter) or by optional transport
    padding (spaces, tabs) and CRLF; anything else is ordinary content sharing a prefix.
    """
    if body.startswith(b"--", after):
        return after
    line_end = body.find(b"\r\n", after)
    if line_end < 0 or body[after:line_end].strip(b" \t"):
        return None
    return line_end


def _next_delimiter(body: bytes, dash_boundary: bytes, start: int) -> tuple[int, int]:
    """The next delimiter at or after ``start``: (where its CRLF begins, where its line ends)."""
    needle = b"\r\n" + dash_boundary
    position = body.find(needle, start)
    while position >= 0:
        end = _delimiter_end(body, position + len(needle))
        if end is not None:
            return position, end
        position = body.find(needle, position + 1)
    raise ProtocolError("multipart body ends before its close delimiter")


def _parse_headers(block: bytes) -> CaseInsensitiveDict[str]:
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    last: str | None = None
    for line in block.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] += " " + line.strip()  # an obsolete folded continuation line
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"malformed multipart header line {line!r}")
        last = name.strip()
        headers[last] = value.strip()
    return headers


def _parse_part(raw: bytes) -> Part:
    if not raw:
        return Part()
    if raw.startswith(b"\r\n"):
        return Part(CaseInsensitiveDict(), raw[2:])
    block, separator, body = raw.partition(b"\r\n\r\n")
    if not separator:
        # RFC 2046 lets a part be headers only: the CRLF ending the last one is the delimiter's.
        block = raw.removesuffix(b"\r\n")
    return Part(_parse_headers(block), body)


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Split a ``multipart/*`` body (RFC 2046) into its parts.

    ``content_type`` is the message's ``Content-Type`` header, which must carry the
    ``boundary`` parameter. Part bodies are returned byte for byte: the CRLF before each
    delimiter belongs to the delimiter, and nothing else is trimmed or decoded. Preamble
    and epilogue are ignored. Raises ``ProtocolError`` on a missing boundary, a missing
    close delimiter or a malformed part.
    """
    dash_boundary = b"--" + _boundary(content_type)
    # The first delimiter may open the body without a CRLF before it.
    line_end = _delimiter_end(body, len(dash_boundary)) if body.startswith(dash_boundary) else None
    if line_end is None:
        _, line_end = _next_delimiter(body, dash_boundary, 0)
    parts: list[Part] = []
    while not body.startswith(b"--", line_end):
        start, next_end = _next_delimiter(body, dash_boundary, line_end)
        parts.append(_parse_part(body[line_end + 2 : max(start, line_end + 2)]))
        line_end = next_end
    return parts


def multipart_body(parts: Iterable[tuple[Mapping[str, str], bytes]]) -> tuple[bytes, str]:
    """(body, Content-Type) of a ``multipart/mixed`` message of ``(headers, body)`` parts.

    Raises ``ValueError`` for a header value with a line break (it would forge headers).
    """
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for headers, body in parts:
        lines = []
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} must not contain a line break: {value!r}")
            lines.append(f"{name}: {value}\r\n")
        chunks += [f"--{boundary}\r\n{''.join(lines)}\r\n".encode("latin-1"), body, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/mixed; boundary={boundary}"
