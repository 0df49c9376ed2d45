"""``inferbox-broker import-v0 --from az://inboxv0``: adopt the pending payloads of a v0 inbox.

The original ``predict_v0`` stored each payload as ``inboxv0/<guid>.payload`` and
``puttaskresult_v0`` deleted it once a result came, so that container holds exactly the tasks still
waiting. Each ``<guid>.payload`` blob becomes a queued task in the compat queue
(``INFERBOX_COMPAT_QUEUE``), owned by the compat keys, whose task id is that GUID (see
:mod:`broker.compat`): clients polling ``getresult_v0`` with the ids they already hold find their
tasks, and get the result once a worker posts it.

- Blobs are queued in name order, the order the original workers took them in.
- Idempotent: a blob whose task already exists is skipped, so a second run adds nothing.
- The payload is copied (streamed) into the broker's storage; ``--move`` then deletes the source
  blob, so a function app still running cannot hand the same payload out again.
- Blobs whose names are not ``<guid>.payload`` are left alone and listed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, cast

from storage import BlobStore, StorageError, open_store

from . import compat
from . import keys as K
from .errors import BrokerError, SettingsError, TaskNotFound
from .mailbox import Mailbox
from .settings import Settings

log = logging.getLogger("inferbox.broker")


@dataclass
class ImportReport:
    queued: list[str] = field(default_factory=list)  # source blob names
    already: list[str] = field(default_factory=list)  # their task existed
    foreign: list[str] = field(default_factory=list)  # not <guid>.payload

    def summary(self, source: str, queue: str) -> str:
        lines = [f"queued {len(self.queued)} task(s) from {source} into queue {queue!r}; "
                 f"{len(self.already)} already imported"]  # fmt: skip
        if self.foreign:
            shown = ", ".join(self.foreign[:20]) + (" ..." if len(self.foreign) > 20 else "")
            lines.append(f"left alone {len(self.foreign)} blob(s) not <guid>.payload: {shown}")
        return "\n".join(lines)


def is_v0_payload(name: str) -> bool:
    stem = name.removesuffix(compat.PAYLOAD_SUFFIX)
    return stem != name and bool(compat.GUID.fullmatch(stem))


def import_v0(
    mailbox: Mailbox, source: BlobStore, settings: Settings, *, move: bool = False,
    progress: Callable[[str], None] = log.info,
) -> ImportReport:  # fmt: skip
    """Queue every pending ``<guid>.payload`` blob of ``source`` (see the module docstring)."""
    report = ImportReport()
    for name in source.list():
        if not is_v0_payload(name):
            report.foreign.append(name)
            continue
        task_id, _ = compat.parse_id(name)
        if _exists(mailbox, task_id):
            report.already.append(name)
        else:
            _queue(mailbox, source, name, task_id, settings)
            report.queued.append(name)
            progress(f"queued {name} as task {task_id}")
        if move:
            source.delete(name)
    return report


def _exists(mailbox: Mailbox, task_id: str) -> bool:
    try:
        mailbox.queue.get(task_id)
    except TaskNotFound:
        return False
    return True


def _queue(
    mailbox: Mailbox, source: BlobStore, name: str, task_id: str, settings: Settings
) -> None:
    with source.get(name) as blob:
        mailbox.submit(
            cast(IO[bytes], blob), content_type=blob.info.content_type, queue=settings.compat_queue,
            owner=K.COMPAT_OWNER, priority=K.DEFAULT_PRIORITY,
            max_attempts=settings.default_max_attempts, ttl=settings.default_ttl,
            idempotency_key=f"import-v0:{name}", task_id=task_id,
        )  # fmt: skip


def run(source_url: str | None, *, move: bool = False) -> int:
    """The ``import-v0`` command: settings from ``INFERBOX_*``; returns the exit status."""
    from .app import create_app

    try:
        if not source_url:
            raise SettingsError("import-v0 needs --from URL, e.g. --from az://inboxv0")
        settings = Settings.from_env()
        if settings.embedded:
            raise SettingsError(
                "import-v0 needs INFERBOX_REDIS_URL: the embedded index lives inside one broker "
                "process, and tasks queued here would vanish with this command"
            )
        mailbox: Mailbox = create_app(settings).extensions["inferbox"].mailbox
        with open_store(source_url) as source:
            report = import_v0(mailbox, source, settings, move=move)
    except (SettingsError, StorageError, BrokerError) as exc:
        again = "" if isinstance(exc, SettingsError) else " (run it again: it skips what it queued)"
        print(f"inferbox-broker import-v0: {exc}{again}", file=sys.stderr)
        return 2 if isinstance(exc, SettingsError) else 1
    print(report.summary(source_url, settings.compat_queue))
    return 0
