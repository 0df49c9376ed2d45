"""``inferbox-worker``: run a handler function as an inferbox worker.

::

    inferbox-worker --broker http://localhost:8000 --queue digits \\
        --handler worker.examples.digits:predict
    inferbox-worker --broker http://localhost:8000 --queue digits --batch-size 32 \\
        --keras model.keras --preprocess mymodule:to_input --postprocess mymodule:to_answer

Every flag can come from the environment instead; the flag wins. The environment is read in
``main`` only, never at import time. SIGTERM or SIGINT stops the worker after the task in
hand (tasks fetched ahead go back to the queue); a second one hands back the task in hand too and
stops at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from client_sdk.errors import InferboxError
from worker.errors import HandlerLoadError
from worker.worker import MAX_PREFETCH, Handler, Worker

__all__ = ["build_parser", "load_handler", "load_model_handler", "main", "parse_args"]

logger = logging.getLogger("inferbox.worker")

# flag destination -> environment variable that supplies its default
ENVIRONMENT = {
    "broker": "INFERBOX_BROKER_URL",
    "token": "INFERBOX_TOKEN",
    "queue": "INFERBOX_QUEUE",
    "handler": "INFERBOX_HANDLER",
    "lease": "INFERBOX_LEASE",
    "wait": "INFERBOX_WAIT",
    "worker_id": "INFERBOX_WORKER_ID",
    "max_tasks": "INFERBOX_MAX_TASKS",
    "model_version": "INFERBOX_MODEL_VERSION",
    "log_level": "INFERBOX_LOG_LEVEL",
    "batch_size": "INFERBOX_BATCH_SIZE",
    "keras": "INFERBOX_KERAS_MODEL",
    "preprocess": "INFERBOX_PREPROCESS",
    "postprocess": "INFERBOX_POSTPROCESS",
    "result_type": "INFERBOX_RESULT_TYPE",
    "pipeline": "INFERBOX_PIPELINE",
    "prefetch": "INFERBOX_PREFETCH",
    "progress": "INFERBOX_PROGRESS",
}
_REQUIRED = ("broker",)
_ON_OFF = {"1": True, "true": True, "yes": True, "on": True,
           "0": False, "false": False, "no": False, "off": False}  # fmt: skip
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser, with each flag's default taken from ``environ``."""
    parser = argparse.ArgumentParser(
        prog="inferbox-worker", description="Take tasks from an inferbox broker and run a handler."
    )
    add = parser.add_argument
    add("--broker", help="broker base URL [INFERBOX_BROKER_URL]")
    add("--token", help="worker bearer token; prefer the env var [INFERBOX_TOKEN]")
    add("--queue", help="queue name(s), comma-separated [INFERBOX_QUEUE] (default: default)")
    add("--handler", help="module:function to call with each payload [INFERBOX_HANDLER]")
    add("--lease", type=int, help="lease length in seconds [INFERBOX_LEASE] (default: 60)")
    add("--wait", type=int, help="long-poll seconds per take [INFERBOX_WAIT] (default: 20)")
    add("--worker-id", help="name recorded on tasks [INFERBOX_WORKER_ID] (default: host-pid)")
    add("--max-tasks", type=int, help="exit after this many tasks [INFERBOX_MAX_TASKS]")
    add("--model-version", help="stored with every result [INFERBOX_MODEL_VERSION] "
        "(default: a hash of the model file or the handler's module)")
    add("--batch-size", type=int, help="tasks per take and per batch handler call "
        "[INFERBOX_BATCH_SIZE] (default: 1)")
    add("--keras", metavar="MODEL.keras", help="serve this Keras model [INFERBOX_KERAS_MODEL]")
    add("--preprocess", metavar="MODULE:FN", help="with --keras: payload -> model input "
        "[INFERBOX_PREPROCESS]")
    add("--postprocess", metavar="MODULE:FN", help="with --keras: output row -> result "
        "[INFERBOX_POSTPROCESS]")
    add("--result-type", help="send array results as image/png, image/jpeg, application/json "
        "or application/x-npy [INFERBOX_RESULT_TYPE]")
    add("--pipeline", type=_on_off, help="fetch and post while the model works: on/off "
        "[INFERBOX_PIPELINE] (default: on)")
    add("--prefetch", type=int, help="batches held taken ahead of the model, 1-16; several "
        "come in one take when queued [INFERBOX_PREFETCH] (default: 1)")
    add("--progress", type=_on_off, help="live progress line: on/off [INFERBOX_PROGRESS] "
        "(default: on a terminal)")
    add(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="[INFERBOX_LOG_LEVEL] (default: INFO)",
    )
    fallback = {"queue": "default", "lease": "60", "wait": "20", "log_level": "INFO",
                "batch_size": "1", "pipeline": "on", "prefetch": "1"}  # fmt: skip
    # argparse runs `type` on string defaults, so values from the environment are checked
    # exactly like values from the command line.
    parser.set_defaults(
        **{dest: environ.get(var) or fallback.get(dest) for dest, var in ENVIRONMENT.items()}
    )
    return parser


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse ``argv`` with defaults from ``environ``; exits with a usage error when the
    broker URL or the handler is given neither way."""
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    for dest in _REQUIRED:
        if not getattr(args, dest):
            flag = "--" + dest.replace("_", "-")
            parser.error(f"{flag} (or {ENVIRONMENT[dest]}) is required")
    if bool(args.handler) == bool(args.keras):
        parser.error("give exactly one of --handler (INFERBOX_HANDLER) or --keras "
                     "(INFERBOX_KERAS_MODEL)")
    if (args.preprocess or args.postprocess) and not args.keras:
        parser.error("--preprocess and --postprocess go with --keras")
    if not 1 <= args.batch_size <= 100:
        parser.error("--batch-size must be 1-100")
    if not 1 <= args.prefetch <= MAX_PREFETCH:
        parser.error(f"--prefetch must be 1-{MAX_PREFETCH}")
    return args


def _on_off(value: str) -> bool:
    try:
        return _ON_OFF[value.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}") from None


def load_handler(spec: str) -> Handler:
    """The callable named by ``"package.module:function"`` (``function`` may be dotted).

    Raises ``HandlerLoadError`` saying what is wrong when the spec is malformed, the module
    does not import, or the name is missing or not callable.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise HandlerLoadError(f"handler must look like module:function, got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerLoadError(f"cannot import handler module {module_name!r}: {exc}") from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise HandlerLoadError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise HandlerLoadError(f"handler {spec!r} is not callable")
    handler: Handler = target
    return handler


def _install_signal_handlers(worker: Worker) -> dict[int, Any]:
    """Route SIGTERM/SIGINT to ``worker.stop``; a second signal interrupts at once."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if worker.stopping:
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        logger.info("%s received: stopping after the task in hand (again to force)", name)
        worker.stop(wait=False)

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def _run(worker: Worker, handler: Handler, args: argparse.Namespace) -> int:
    previous = _install_signal_handlers(worker)
    try:
        stats = worker.run(handler, max_tasks=args.max_tasks, result_type=args.result_type,
                           progress=args.progress)  # fmt: skip
    except KeyboardInterrupt:
        logger.warning("interrupted")
        return _EXIT_INTERRUPTED
    except InferboxError as exc:
        logger.error("worker stopped: %s", exc)
        return 1
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return _EXIT_INTERRUPTED if stats.interrupted else 0


def load_model_handler(args: argparse.Namespace) -> Handler:
    """The handler the flags name: ``--handler``, or a ``KerasHandler`` for ``--keras``."""
    if not args.keras:
        return load_handler(args.handler)
    from worker.keras import KerasHandler

    return KerasHandler(
        args.keras,
        preprocess=load_handler(args.preprocess) if args.preprocess else None,
        postprocess=load_handler(args.postprocess) if args.postprocess else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``inferbox-worker``; returns the process exit status."""
    args = parse_args(argv, os.environ)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Like gunicorn and uvicorn: a handler module next to where the command runs imports.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        handler = load_model_handler(args)
        worker = _make_worker(args)
    except (HandlerLoadError, ValueError) as exc:
        print(f"inferbox-worker: {exc}", file=sys.stderr)
        return _EXIT_USAGE
    with worker:
        return _run(worker, handler, args)


def _make_worker(args: argparse.Namespace) -> Worker:
    return Worker(
        args.broker,
        args.token,
        args.queue,
        worker_id=args.worker_id,
        lease=args.lease,
        wait=args.wait,
        model_version=args.model_version,
        batch_size=args.batch_size,
        pipeline=args.pipeline,
        prefetch=args.prefetch,
    )


if __name__ == "__main__":
    sys.exit(main())
