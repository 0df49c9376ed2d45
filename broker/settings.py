"""Broker settings, parsed once at the entry point from ``INFERBOX_*`` environment variables.

Nothing reads the environment at import time: ``inferbox-broker`` calls
:meth:`Settings.from_env` once and hands the result to :func:`broker.create_app`; tests build
``Settings(...)`` directly.

=============================  ==========================================================
variable                       meaning (default)
=============================  ==========================================================
INFERBOX_REDIS_URL             ``redis://host:6379/0``; unset: embedded in-process Redis
INFERBOX_REDIS_PREFIX          key prefix (``inferbox``)
INFERBOX_REDIS_CONNECTIONS     Redis connections per server process, at most (64); a request
                               that finds none free waits up to 10 s, then answers 503
INFERBOX_STORAGE_URL           ``file:///abs/path``, ``s3://bucket/prefix``, ``memory://``
                               (``file:`` + ``./inferbox-data`` of the start directory)
INFERBOX_CLIENT_TOKENS         comma-separated client tokens
INFERBOX_WORKER_TOKENS         comma-separated worker tokens
INFERBOX_ADMIN_TOKENS          comma-separated admin tokens
INFERBOX_TOKENS_FILE           a file of ``<role> <token or sha256:hex> [name]`` lines
INFERBOX_ALLOW_OPEN            ``1``: serve without tokens on a non-loopback address
INFERBOX_MAX_PAYLOAD_BYTES     body limit of payloads and results (104857600)
INFERBOX_MAX_WAIT              cap of ``?wait=`` long-polls in seconds (60)
INFERBOX_DEFAULT_TTL           seconds a task may wait in its queue (86400)
INFERBOX_DEFAULT_MAX_ATTEMPTS  attempts per task unless the submit says (3)
INFERBOX_HOST / INFERBOX_PORT  where ``inferbox-broker`` listens (127.0.0.1 / 8000)
INFERBOX_WORKERS               server processes (1; must be 1 on the embedded Redis)
INFERBOX_THREADS               threads per process, i.e. concurrent long-polls (64)
INFERBOX_WEBHOOK_SECRET        signs webhook deliveries (``whsec_<base64>`` or any string);
                               unset: submits with a webhook are refused
INFERBOX_WEBHOOK_ALLOW         comma-separated networks or host names webhooks may call although
                               they are loopback, private or link-local (none)
INFERBOX_WEBHOOK_RETRY_DELAYS  seconds before each retry of a failed delivery
                               (5,30,120,600,1800,3600)
INFERBOX_COMPAT_KEYS           comma-separated function keys of the v0 ``/api/*`` endpoints
                               (``?code=`` or ``x-functions-key``); each acts as a client
                               and a worker token, all owning the same tasks
INFERBOX_COMPAT_QUEUE          the queue v0 tasks enter and v0 workers take (``default``)
INFERBOX_COMPAT_LEASE          seconds a v0 worker holds a task; v0 has no heartbeat (60)
INFERBOX_PAYLOAD_SOURCES       comma-separated storage URLs under which a submit may name its
                               payload instead of sending it; ``{owner}`` stands for the
                               caller's owner id (none; see ``broker.sources``)
INFERBOX_MAX_QUEUE_DEPTH       queued tasks per queue before submits get 429 (0: no limit)
INFERBOX_SUBMIT_RATE           submits per second per token before 429 (0: no limit)
INFERBOX_SUBMIT_BURST          submits a token may make at once (0: one second's worth)
INFERBOX_RETENTION             seconds a finished task keeps its payload and result (86400);
                               then it answers ``expired`` for as long again, then 404
INFERBOX_JANITOR_INTERVAL      seconds between janitor passes (10; 0: no janitor)
INFERBOX_RECONCILE_INTERVAL    seconds between scans of storage for tasks the index lacks
                               (300; 0: only at start-up and ``inferbox-broker reindex``)
INFERBOX_RECONCILE_GRACE       age in seconds before an unindexed payload is restored (60)
INFERBOX_CORS_ORIGINS          comma-separated origins allowed by CORS (none: CORS off)
=============================  ==========================================================
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import keys as K
from .errors import InvalidQueue, SettingsError
from .options import queue_name

PREFIX = "INFERBOX_"
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def default_storage_url() -> str:
    return Path("inferbox-data").resolve().as_uri()


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    redis_prefix: str = K.DEFAULT_PREFIX
    redis_connections: int = K.DEFAULT_REDIS_CONNECTIONS
    storage_url: str = field(default_factory=default_storage_url)
    client_tokens: tuple[str, ...] = ()
    worker_tokens: tuple[str, ...] = ()
    admin_tokens: tuple[str, ...] = ()
    tokens_file: Path | None = None
    allow_open: bool = False
    max_payload_bytes: int = K.DEFAULT_MAX_PAYLOAD_BYTES
    max_wait: int = K.DEFAULT_MAX_WAIT
    default_ttl: int = K.DEFAULT_TTL
    default_max_attempts: int = K.DEFAULT_MAX_ATTEMPTS
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 64
    webhook_secret: str | None = None
    webhook_allow: tuple[str, ...] = ()
    webhook_retry_delays: tuple[int, ...] = K.WEBHOOK_RETRY_DELAYS
    compat_keys: tuple[str, ...] = ()
    compat_queue: str = K.DEFAULT_QUEUE
    compat_lease: int = K.DEFAULT_LEASE
    payload_sources: tuple[str, ...] = ()
    max_queue_depth: int = K.DEFAULT_MAX_QUEUE_DEPTH
    submit_rate: float = K.DEFAULT_SUBMIT_RATE
    submit_burst: int = K.DEFAULT_SUBMIT_BURST
    retention: int = K.DEFAULT_RETENTION
    janitor_interval: float = K.DEFAULT_JANITOR_INTERVAL
    reconcile_interval: float = K.DEFAULT_RECONCILE_INTERVAL
    reconcile_grace: float = K.DEFAULT_RECONCILE_GRACE
    cors_origins: tuple[str, ...] = ()

    @property
    def embedded(self) -> bool:
        """True when the broker runs its own in-process Redis (no INFERBOX_REDIS_URL)."""
        return not self.redis_url

    @property
    def has_tokens(self) -> bool:
        tokens = self.client_tokens + self.worker_tokens + self.admin_tokens + self.compat_keys
        return bool(tokens) or self.tokens_file is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Env(os.environ if environ is None else environ)
        tokens_file = env.text("TOKENS_FILE")
        settings = cls(
            redis_url=env.text("REDIS_URL"),
            redis_prefix=env.text("REDIS_PREFIX") or K.DEFAULT_PREFIX,
            redis_connections=env.number("REDIS_CONNECTIONS", K.DEFAULT_REDIS_CONNECTIONS, low=2),
            storage_url=env.text("STORAGE_URL") or default_storage_url(),
            client_tokens=env.items("CLIENT_TOKENS"),
            worker_tokens=env.items("WORKER_TOKENS"),
            admin_tokens=env.items("ADMIN_TOKENS"),
            tokens_file=Path(tokens_file) if tokens_file else None,
            allow_open=env.flag("ALLOW_OPEN"),
            max_payload_bytes=env.number("MAX_PAYLOAD_BYTES", K.DEFAULT_MAX_PAYLOAD_BYTES),
            max_wait=env.number("MAX_WAIT", K.DEFAULT_MAX_WAIT),
            default_ttl=env.number("DEFAULT_TTL", K.DEFAULT_TTL, high=K.MAX_TTL),
            default_max_attempts=env.number(
                "DEFAULT_MAX_ATTEMPTS", K.DEFAULT_MAX_ATTEMPTS, high=K.MAX_ATTEMPTS_LIMIT
            ),
            host=env.text("HOST") or "127.0.0.1",
            port=env.number("PORT", 8000, low=0, high=65535),
            workers=env.number("WORKERS", 1),
            threads=env.number("THREADS", 64),
            webhook_secret=env.text("WEBHOOK_SECRET"),
            webhook_allow=env.items("WEBHOOK_ALLOW"),
            webhook_retry_delays=env.numbers("WEBHOOK_RETRY_DELAYS", K.WEBHOOK_RETRY_DELAYS),
            compat_keys=env.items("COMPAT_KEYS"),
            compat_queue=env.queue("COMPAT_QUEUE", K.DEFAULT_QUEUE),
            compat_lease=env.number("COMPAT_LEASE", K.DEFAULT_LEASE, high=K.MAX_LEASE),
            payload_sources=env.items("PAYLOAD_SOURCES"),
            max_queue_depth=env.number("MAX_QUEUE_DEPTH", K.DEFAULT_MAX_QUEUE_DEPTH, low=0),
            submit_rate=env.seconds("SUBMIT_RATE", K.DEFAULT_SUBMIT_RATE),
            submit_burst=env.number("SUBMIT_BURST", K.DEFAULT_SUBMIT_BURST, low=0),
            retention=env.number("RETENTION", K.DEFAULT_RETENTION),
            janitor_interval=env.seconds("JANITOR_INTERVAL", K.DEFAULT_JANITOR_INTERVAL),
            reconcile_interval=env.seconds("RECONCILE_INTERVAL", K.DEFAULT_RECONCILE_INTERVAL),
            reconcile_grace=env.seconds("RECONCILE_GRACE", K.DEFAULT_RECONCILE_GRACE),
            cors_origins=env.origins("CORS_ORIGINS"),
        )
        settings.check_webhooks()
        settings.check_sources()
        return settings

    def check_sources(self) -> None:
        """Raise SettingsError for a payload source that is malformed or covers the store."""
        from .sources import PayloadSources

        PayloadSources(self.payload_sources, own_store=self.storage_url)

    def check_webhooks(self) -> None:
        """Raise SettingsError for a malformed webhook secret or allow-list."""
        from .webhooks.guard import AddressPolicy
        from .webhooks.signing import secret_key

        AddressPolicy.from_items(self.webhook_allow)
        if self.webhook_secret:
            secret_key(self.webhook_secret)


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name, "").strip()
        return value or None

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.text(name) or ""
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def origins(self, name: str) -> tuple[str, ...]:
        """Web origins (``https://app.example.com``, with a port if not the default) or ``*``."""
        found = self.items(name)
        for origin in found:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise SettingsError(f"{PREFIX}{name}: {origin!r} is not an origin like "
                                    "https://app.example.com (no path, no trailing slash)")
        return tuple(origin.lower() for origin in found)

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "0").lower()
        if raw not in {"0", "1", "true", "false", "yes", "no", "on", "off"}:
            raise SettingsError(f"{PREFIX}{name} must be a boolean (1/0, true/false), not {raw!r}")
        return raw in {"1", "true", "yes", "on"}

    def numbers(self, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """Comma-separated non-negative integers."""
        if self.text(name) is None:
            return default
        try:
            values = tuple(int(item) for item in self.items(name))
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be comma-separated integers") from None
        if any(value < 0 for value in values):
            raise SettingsError(f"{PREFIX}{name} must not be negative")
        return values

    def queue(self, name: str, default: str) -> str:
        raw = self.text(name)
        try:
            return queue_name(raw) if raw is not None else default
        except InvalidQueue as exc:
            raise SettingsError(f"{PREFIX}{name}: {exc.message}") from None

    def seconds(self, name: str, default: float) -> float:
        """A non-negative decimal number (seconds, or a rate per second)."""
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be a number, not {raw!r}") from None
        if not math.isfinite(value) or value < 0:
            raise SettingsError(f"{PREFIX}{name} must be a number >= 0, not {raw!r}")
        return value

    def number(self, name: str, default: int, *, low: int = 1, high: int | None = None) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{PREFIX}{name} must be an integer, not {raw!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise SettingsError(f"{PREFIX}{name} must be {bounds}, not {value}")
        return value
