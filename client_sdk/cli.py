"""``inferbox``: submit files, look at tasks, fetch results, run resumable batch jobs.

::

    inferbox submit photo.png scan.png --queue segment --wait -o masks/
    inferbox status <task_id>
    inferbox result <task_id> -o mask.png
    inferbox batch 'scans/**/*.png' -o masks/ --queue segment
    inferbox batch s3://bucket/scans/ -o s3://bucket/masks/ --queue segment

``--broker`` and ``--token`` default to ``INFERBOX_BROKER_URL`` and ``INFERBOX_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from client_sdk.batch import extension_for, run_batch
from client_sdk.client import Client
from client_sdk.codec import Encoded
from client_sdk.errors import InferboxError, TaskError

__all__ = ["main"]

_EXIT_FAILED = 1
_EXIT_USAGE = 2


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferbox", description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=environ.get("INFERBOX_BROKER_URL"),
                        help="broker base URL [INFERBOX_BROKER_URL]")
    parser.add_argument("--token", default=environ.get("INFERBOX_TOKEN"),
                        help="client bearer token; prefer the env var [INFERBOX_TOKEN]")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for a result (default: as long as it takes)")
    commands = parser.add_subparsers(dest="command", required=True)

    submit = commands.add_parser("submit", help="submit files, one task each")
    submit.add_argument("files", nargs="+", type=Path)
    _task_options(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the results")
    submit.add_argument("-o", "--out", type=Path, help="with --wait: write results here")

    status = commands.add_parser("status", help="print a task's status document")
    status.add_argument("task_id")

    result = commands.add_parser("result", help="wait for a task's result")
    result.add_argument("task_id")
    result.add_argument("-o", "--out", type=Path, help="write the result bytes to this file")

    batch = commands.add_parser("batch", help="every input of a folder, glob or storage "
                                "prefix, resumable")  # fmt: skip
    batch.add_argument("source", help="a folder, a glob such as 'scans/**/*.png', or a storage "
                       "prefix (s3://bucket/in/, az://container/in/, file:///data/in/)")
    batch.add_argument("-o", "--out", required=True,
                       help="folder or storage prefix for the results")
    _task_options(batch)
    batch.add_argument("--concurrency", type=int, default=16, help="tasks in flight (16)")
    batch.add_argument("--retry-failed", action="store_true",
                       help="submit the inputs that failed in an earlier run again")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    batch.add_argument("--copy", action="store_true",
                       help="read storage inputs here and send their bytes, instead of naming "
                       "them for the broker to read (the default, where it may)")
    return parser


def _task_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--queue", default="default", help="queue (model) name")
    command.add_argument("--priority", type=int, help="0-9, higher first")
    command.add_argument("--ttl", type=int, help="seconds the task may wait in its queue")


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser(os.environ if environ is None else environ).parse_args(argv)
    if not args.broker:
        print("inferbox: --broker (or INFERBOX_BROKER_URL) is required", file=sys.stderr)
        return _EXIT_USAGE
    try:
        with Client(args.broker, token=args.token) as client:
            return int(COMMANDS[args.command](client, args))
    except (InferboxError, OSError, ValueError) as exc:
        print(f"inferbox: {exc}", file=sys.stderr)
        return _EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninferbox: interrupted (a batch resumes where it stopped)", file=sys.stderr)
        return 130


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in ("priority", "ttl")
            if getattr(args, name) is not None}  # fmt: skip


def _submit(client: Client, args: argparse.Namespace) -> int:
    tasks = [(path, client.submit(path, queue=args.queue, **_options(args)))
             for path in args.files]  # fmt: skip
    for path, task in tasks:
        print(f"{task.id}\t{path}")
    if not args.wait:
        return 0
    failed = 0
    for path, task in tasks:
        try:
            result = task.result(args.timeout, raw=True)
        except TaskError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        target = args.out / (path.stem + extension_for(result.content_type)) if args.out else None
        _emit(result, target)
    return _EXIT_FAILED if failed else 0


def _status(client: Client, args: argparse.Namespace) -> int:
    print(json.dumps(client.status(args.task_id), indent=2))
    return 0


def _result(client: Client, args: argparse.Namespace) -> int:
    _emit(client.result(args.task_id, args.timeout, raw=True), args.out)
    return 0


def _emit(result: Encoded, target: Path | None) -> None:
    """Write the result to ``target``, or print it when it is text or JSON."""
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(result.body)
        print(f"wrote {target} ({len(result.body)} bytes, {result.content_type})")
        return
    media_type = result.content_type.split(";")[0].strip().lower()
    if media_type.startswith("text/") or media_type.endswith("json"):
        sys.stdout.write(result.body.decode("utf-8", errors="replace") + "\n")
    else:
        raise ValueError(f"the result is {result.content_type}: give -o FILE to save it")


def _batch(client: Client, args: argparse.Namespace) -> int:
    report = run_batch(client, args.source, args.out, queue=args.queue,
                       concurrency=args.concurrency, timeout=args.timeout,
                       retry_failed=args.retry_failed, progress=not args.no_progress,
                       copy=args.copy, **_options(args))  # fmt: skip
    print(report.summary())
    return 0 if report.ok else _EXIT_FAILED


COMMANDS = {"submit": _submit, "status": _status, "result": _result, "batch": _batch}


if __name__ == "__main__":
    sys.exit(main())
