"""``inferbox-broker``: serve the broker, rebuild its index, hash a token.

::

    inferbox-broker [serve]        serve (the default)
    inferbox-broker reindex        restore every task storage holds and the index lacks
    inferbox-broker hash-token     read a token on stdin, print its sha256: form for config files

Settings come from ``INFERBOX_*`` variables (see ``broker.settings``), read once here; flags
override them. The production server is gunicorn with threaded workers (``gthread``): a waiting
long-poll holds a thread, not a process, so ``--threads`` is the number of requests one process
can hold at once (long-polling workers and clients included).

Serving starts with the index check: an empty index over a non-empty store is rebuilt from
storage before the first request (``broker.janitor.ensure_index``). Each server process runs a
janitor thread. On SIGTERM each process stops accepting, answers waiting long-polls at once
(``204`` / ``202`` pending), finishes the requests in flight, writes the state records still
due, and exits.
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from flask import Flask

from . import import_v0
from . import keys as K
from .app import Inferbox, create_app
from .auth import digest
from .errors import SettingsError, Unavailable
from .janitor import ensure_index
from .mailbox import Mailbox
from .reindex import rebuild
from .settings import Settings

log = logging.getLogger("inferbox.broker")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "import-v0":
        return import_v0.run(args.source, move=args.move)
    if args.command == "hash-token":
        return hash_token()
    try:
        settings = _settings(args)
        if args.command == "reindex":
            return reindex(settings, grace=args.grace)
        _check_exposure(settings)
    except SettingsError as exc:
        print(f"inferbox-broker: {exc}", file=sys.stderr)
        return 2
    if args.command == "jobs":
        return _jobs(settings)
    _announce(settings)
    serve(settings, access_log=args.access_log)
    return 0


def _jobs(settings: Settings) -> int:
    from .jobs import run_jobs

    try:
        run_jobs(settings)
    except SettingsError as exc:
        print(f"inferbox-broker: {exc}", file=sys.stderr)
        return 2
    return 0


def hash_token() -> int:
    """Print ``sha256:<hex>`` for a token read from stdin (or typed, unechoed, at a terminal)."""
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    token = token.strip()
    if not token:
        print("inferbox-broker: no token given", file=sys.stderr)
        return 2
    print(f"sha256:{digest(token)}")
    return 0


def reindex(settings: Settings, *, grace: float) -> int:
    """Restore into the index every task in storage that it lacks; print what was done."""
    if settings.embedded:
        raise SettingsError(
            "the embedded index lives inside the broker process, which rebuilds it from storage "
            "when it starts; reindex needs INFERBOX_REDIS_URL"
        )
    box = _box(create_app(settings))
    try:
        with box.mailbox.queue.lock("reindex") as held:
            if not held:
                log.warning("another process holds the reindex lock; rebuilding anyway")
            report = rebuild(box.mailbox.queue, box.mailbox.store, grace=grace)
    except Unavailable as exc:
        print(f"inferbox-broker: {exc}", file=sys.stderr)
        return 1
    print(f"reindex: {report.summary()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferbox-broker",
        description="Serve the inferbox broker. With no INFERBOX_REDIS_URL it runs on an "
        "embedded in-process Redis and file:// storage: no services needed.",
    )
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "jobs", "reindex", "import-v0", "hash-token"],
                        help="serve: the HTTP broker (default); jobs: deliver webhooks (rq "
                        "worker); reindex: restore into the index every task in storage it lacks; "
                        "import-v0: queue the pending payloads of an original v0 inbox container "
                        "(docs/compat-azureml.md); hash-token: print a token's sha256 digest")
    parser.add_argument("--grace", type=float, default=0.0,
                        help="reindex: skip blobs younger than this many seconds (a submit "
                        "in flight on a live broker); default 0")
    parser.add_argument("--host", help="address to bind (INFERBOX_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (INFERBOX_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="server processes (INFERBOX_WORKERS, 1)")
    parser.add_argument("--threads", type=int, help="threads per process (INFERBOX_THREADS, 64)")
    parser.add_argument("--allow-open", action="store_true", default=None,
                        help="serve without tokens on a non-loopback address (INFERBOX_ALLOW_OPEN)")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument("--from", dest="source", metavar="URL",
                        help="import-v0: the v0 inbox container, e.g. az://inboxv0")
    parser.add_argument("--move", action="store_true",
                        help="import-v0: delete each source blob once its task is queued")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {name: getattr(args, name)
                 for name in ("host", "port", "workers", "threads", "allow_open")
                 if getattr(args, name) is not None}  # fmt: skip
    settings = replace(settings, **overrides)
    if settings.embedded and settings.workers != 1:
        raise SettingsError(
            "the embedded Redis lives inside one process: set INFERBOX_REDIS_URL to run "
            f"{settings.workers} server processes"
        )
    return settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_exposure(settings: Settings) -> None:
    """Refuse to serve an open (token-less) broker beyond this machine unless told to."""
    if settings.has_tokens or is_loopback(settings.host) or settings.allow_open:
        return
    raise SettingsError(
        f"refusing to serve on {settings.host} without tokens: anyone who can reach it could "
        "submit, take and read tasks. Set INFERBOX_CLIENT_TOKENS / INFERBOX_WORKER_TOKENS / "
        "INFERBOX_ADMIN_TOKENS (or INFERBOX_TOKENS_FILE), or pass --allow-open."
    )


def _announce(settings: Settings) -> None:
    redis_text = "embedded in-process Redis" if settings.embedded else settings.redis_url
    log.info("inferbox broker on http://%s:%s", settings.host, settings.port)
    log.info("index: %s; storage: %s", redis_text, settings.storage_url)
    if not settings.has_tokens:
        where = "; bound to loopback only" if is_loopback(settings.host) else ""
        log.warning("no tokens configured: the broker is OPEN (every caller is admin)%s", where)


def serve(settings: Settings, *, access_log: bool = False) -> None:
    if not settings.embedded:  # a shared index: rebuild it once, before any process serves
        mailbox = _box(create_app(settings)).mailbox
        _ensure_index(mailbox)
        mailbox.queue.redis.close()
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:  # Windows: no gunicorn; werkzeug's threaded server still works
        log.warning("gunicorn is not installed; using the development server")
        app = serving_app(settings)
        app.run(host=settings.host, port=settings.port, threaded=True)
        _box(app).janitor.stop()
        return

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {**gunicorn_options(settings, access_log=access_log),
                       "post_worker_init": _on_worker_ready, "worker_int": _answer_long_polls,
                       "worker_exit": _on_worker_exit}  # fmt: skip
            for key, value in options.items():
                if key in self.cfg.settings:  # older gunicorns lack some settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return serving_app(settings)  # in each worker process, after the fork

    Server().run()


def _box(app: Flask) -> Inferbox:
    return app.extensions["inferbox"]  # type: ignore[no-any-return]


def serving_app(settings: Settings) -> Flask:
    """The app one server process serves, made ready: its index (the embedded one), its
    janitor. What any WSGI server loads in each of its processes."""
    app = create_app(settings)
    box = _box(app)
    if box.settings.embedded:  # the index lives in this process: rebuild it here
        _ensure_index(box.mailbox)
    box.janitor.start()
    return app


def _ensure_index(mailbox: Mailbox) -> None:
    try:
        ensure_index(mailbox)
    except Unavailable as exc:  # serve anyway (healthz says why); the janitor reconciles later
        log.error("could not check the index against storage: %s", exc)


def _on_worker_ready(worker: Any) -> None:
    """gunicorn hook: on SIGTERM, answer waiting long-polls before the graceful stop."""
    stop_gracefully = worker.handle_exit

    def handle_exit(signum: int, frame: Any) -> None:
        _answer_long_polls(worker)
        stop_gracefully(signum, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def _answer_long_polls(worker: Any) -> None:
    """Answer every waiting long-poll of a server process now, and later ones at once. Also
    gunicorn's ``worker_int`` hook: on Ctrl-C (the quick stop) the process exits only once its
    request threads are done."""
    wsgi = getattr(worker, "wsgi", None)
    if isinstance(wsgi, Flask):
        _box(wsgi).mailbox.close()


def _on_worker_exit(arbiter: Any, worker: Any) -> None:
    """gunicorn hook, in the worker process as it exits: stop the janitor after a last pass."""
    wsgi = getattr(worker, "wsgi", None)
    if isinstance(wsgi, Flask):
        _box(wsgi).janitor.stop()


def gunicorn_options(settings: Settings, *, access_log: bool = False) -> dict[str, Any]:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    options: dict[str, Any] = {
        "bind": f"{host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        # Connections a process keeps open, idle keep-alive ones included; beyond it new
        # connections wait. Every thread may hold a long-poll and as many clients again may sit
        # idle between requests.
        "worker_connections": max(1000, 2 * settings.threads),
        "keepalive": 75,  # workers and SDK clients reuse connections between polls
        "timeout": 60,
        "graceful_timeout": settings.max_wait + 5,  # let waiting long-polls answer on SIGTERM
        "control_socket_disable": True,  # several brokers on one host must not share one
        "pre_request": spread_connections,
    }
    if access_log:
        options["accesslog"] = "-"
    return options


def spread_connections(worker: Any, req: Any) -> None:
    """gunicorn hook before each request: every ``KEEPALIVE_REQUESTS``-th request on one
    connection is answered with ``Connection: close`` (nginx's ``keepalive_requests``).

    A keep-alive connection stays with the process that accepted it, so a few busy clients can
    pin one process while the others idle; a client that reconnects is accepted by whichever
    process gets to it first, the least busy one as a rule.
    """
    if req.req_number % K.KEEPALIVE_REQUESTS == 0:
        req.must_close = True


if __name__ == "__main__":
    sys.exit(main())
