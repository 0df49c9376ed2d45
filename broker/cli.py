"""``inferbox-broker``: serve the broker.

Settings come from ``INFERBOX_*`` variables (see ``broker.settings``), read once here; flags
override them. The production server is gunicorn with threaded workers (``gthread``): a waiting
long-poll holds a thread, not a process, so ``--threads`` is the number of requests one process
can hold at once (long-polling workers and clients included).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import import_v0
from .app import create_app
from .errors import SettingsError
from .settings import Settings

log = logging.getLogger("inferbox.broker")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "import-v0":
        return import_v0.run(args.source, move=args.move)
    try:
        settings = _settings(args)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferbox-broker",
        description="Serve the inferbox broker. With no INFERBOX_REDIS_URL it runs on an "
        "embedded in-process Redis and file:// storage: no services needed.",
    )
    parser.add_argument("command", nargs="?", default="serve",
                        choices=["serve", "jobs", "import-v0"],
                        help="serve: the HTTP broker (default); jobs: deliver webhooks (rq "
                        "worker); import-v0: queue the pending payloads of an original v0 inbox "
                        "container (docs/compat-azureml.md)")
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
    try:
        from gunicorn.app.base import BaseApplication
    except ImportError:  # Windows: no gunicorn; werkzeug's threaded server still works
        log.warning("gunicorn is not installed; using the development server")
        create_app(settings).run(host=settings.host, port=settings.port, threaded=True)
        return

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(settings, access_log=access_log).items():
                if key in self.cfg.settings:  # older gunicorns lack some settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)  # in each worker process, after the fork

    Server().run()


def gunicorn_options(settings: Settings, *, access_log: bool = False) -> dict[str, Any]:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    options: dict[str, Any] = {
        "bind": f"{host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "keepalive": 75,  # workers and SDK clients reuse connections between polls
        "timeout": 60,
        "graceful_timeout": settings.max_wait + 5,  # let waiting long-polls answer on SIGTERM
        "control_socket_disable": True,  # several brokers on one host must not share one
    }
    if access_log:
        options["accesslog"] = "-"
    return options


if __name__ == "__main__":
    sys.exit(main())
