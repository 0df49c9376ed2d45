"""A resumable batch job: every input of a folder, glob or storage prefix through a queue, one
result each, into a folder or a storage prefix (see ``client_sdk.locations``).

``run_batch`` submits every input not yet done, writes each result as it completes, and keeps a
journal beside the results of what was submitted and finished. Run it again after an
interruption and it picks up where it stopped: finished inputs are skipped, submitted ones are
waited for (never submitted again), the rest are submitted. Each submit carries an idempotency
key derived from the input (a file's path and content; a blob's URL), so even a submit whose
task id never reached the journal (killed in between) names the same task when repeated.

Inputs under a storage prefix are submitted by reference (``PayloadRef``): the broker reads each
blob itself, and the bytes never pass through this client. If the broker refuses a reference
(``source_refused``: the prefix is not among its ``INFERBOX_PAYLOAD_SOURCES``, or it cannot
read there) the job reads the inputs here and sends their bytes instead for the rest of the run,
and says so in its report. ``copy=True`` sends the bytes from the start.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_sdk.client import Client
from client_sdk.errors import BadRequest, TaskError, TaskTimeout
from client_sdk.http import parse_content_type
from client_sdk.locations import (
    JOURNAL,
    Folder,
    FolderOutput,
    Prefix,
    PrefixOutput,
    find_inputs,
    open_inputs,
    open_output,
    parse_journal,
)

__all__ = ["JOURNAL", "BatchReport", "find_inputs", "run_batch"]

_EXTENSIONS = {"application/json": ".json", "application/x-npy": ".npy", "text/plain": ".txt",
               "image/png": ".png", "image/jpeg": ".jpg", "application/octet-stream": ".bin"}


@dataclass
class BatchReport:
    total: int = 0
    done_before: int = 0
    done: int = 0
    submitted: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # input name -> error
    pending: list[str] = field(default_factory=list)
    referenced: int = 0  # inputs the broker read from storage itself
    copied: int = 0  # inputs from storage read here and sent
    fallback: str = ""  # why references stopped, when the broker refused one

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def summary(self) -> str:
        lines = [f"{self.total} inputs: {self.done_before + self.done} done "
                 f"({self.done_before} earlier, {self.done} now), {len(self.failed)} failed, "
                 f"{len(self.pending)} pending; {self.submitted} submitted in this run"]
        if self.referenced or self.copied:
            lines.append(f"  {self.referenced} by reference (read by the broker from storage), "
                         f"{self.copied} copied through this client")  # fmt: skip
        if self.fallback:
            lines.append(f"  the broker refused a reference, so inputs were copied: "
                         f"{self.fallback}")  # fmt: skip
        lines += [f"  failed  {name}: {error.splitlines()[0][:200]}"
                  for name, error in sorted(self.failed.items())]  # fmt: skip
        if self.pending:
            lines.append("  run the same command again to wait for the pending ones")
        return "\n".join(lines)


@dataclass
class _Item:
    name: str  # relative to the source, posix style
    output_stem: str
    attempt: int = 0
    task_id: str | None = None


class _Job:
    """One run: where inputs come from and results go, and how inputs travel."""

    def __init__(self, client: Client, inputs: Folder | Prefix,
                 output: FolderOutput | PrefixOutput, queue: str, *, copy: bool,
                 options: dict[str, Any]) -> None:  # fmt: skip
        self.client, self.inputs, self.output, self.queue = client, inputs, output, queue
        self.options = options
        self.by_reference = inputs.remote and not copy
        self.report = BatchReport(total=len(inputs.names))
        self._lock = threading.Lock()

    def submit(self, item: _Item) -> None:
        key = self._idempotency_key(item)
        while True:
            by_reference = self.by_reference
            payload = self.inputs.payload(item.name, by_reference=by_reference)
            try:
                task = self.client.submit(payload, queue=self.queue, idempotency_key=key,
                                          **self.options)  # fmt: skip
                break
            except BadRequest as exc:
                if not (by_reference and exc.error == "source_refused"):
                    raise
                self._stop_references(exc)
        item.task_id = task.id
        with self._lock:
            self.report.submitted += 1
            if self.inputs.remote:
                if by_reference:
                    self.report.referenced += 1
                else:
                    self.report.copied += 1
        via = {"via": "reference" if by_reference else "copy"} if self.inputs.remote else {}
        self.output.journal.write(_line(file=item.name, event="submitted", task_id=task.id,
                                        attempt=item.attempt, **via))  # fmt: skip

    def _stop_references(self, refusal: BadRequest) -> None:
        with self._lock:
            if self.by_reference:
                self.by_reference = False
                self.report.fallback = str(refusal)

    def _idempotency_key(self, item: _Item) -> str:
        identity = self.inputs.identity(item.name)
        if isinstance(self.inputs, Folder):  # path + content, as the journal format always had
            name, digest = identity.split("\n")
            named = hashlib.sha256(f"{self.queue}\n{name}\n{item.attempt}".encode()).hexdigest()
            return f"inferbox-batch-{named[:24]}-{digest[:24]}"
        named = hashlib.sha256(f"{self.queue}\n{identity}\n{item.attempt}".encode()).hexdigest()
        return f"inferbox-batch-{named[:48]}"

    def finish(self, item: _Item, timeout: float | None) -> tuple[str, str, str]:
        """Wait for one task and write its result: (name, done|failed|pending, detail)."""
        assert item.task_id is not None
        journal = self.output.journal
        try:
            body, content_type = self.client.task(item.task_id).result(timeout, raw=True)
        except TaskTimeout:
            return item.name, "pending", ""
        except TaskError as exc:
            error = str(exc.doc.get("error") or exc)
            journal.write(_line(file=item.name, event="failed", task_id=item.task_id,
                                error=error, attempt=item.attempt))  # fmt: skip
            return item.name, "failed", error
        output = f"{item.output_stem}{extension_for(content_type)}"
        self.output.write(output, body, content_type)
        journal.write(_line(file=item.name, event="done", task_id=item.task_id, output=output,
                            attempt=item.attempt))  # fmt: skip
        return item.name, "done", output


def run_batch(
    client: Client, source: str, out: str | Path, *, queue: str, concurrency: int = 16,
    timeout: float | None = None, retry_failed: bool = False, progress: bool = True,
    copy: bool = False, **options: Any,
) -> BatchReport:  # fmt: skip
    """Run the batch job (see the module docstring); returns what happened."""
    inputs = open_inputs(source, str(out))
    output = open_output(out)
    job = _Job(client, inputs, output, queue, copy=copy, options=options)
    todo = _todo(job, parse_journal(output.journal.read()), retry_failed)
    bar = _bar(job.report, enabled=progress)
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="inferbox-batch") as pool:
            fresh = [item for item in todo if not item.task_id]
            for submitted in as_completed([pool.submit(job.submit, item) for item in fresh]):
                submitted.result()
            waits = [pool.submit(job.finish, item, timeout) for item in todo if item.task_id]
            for finished in as_completed(waits):
                _tally(finished.result(), job.report)
                if bar is not None:
                    bar.update(1)
    finally:
        output.journal.close()
        if bar is not None:
            bar.close()
    return job.report


def _todo(job: _Job, state: dict[str, dict[str, Any]], retry_failed: bool) -> list[_Item]:
    """The inputs this run still has to submit or wait for; counts the others."""
    report, todo = job.report, []
    for item in _items(job.inputs.names):
        entry = state.get(item.name, {})
        item.attempt = int(entry.get("attempt", 0))
        if entry.get("event") == "done" and job.output.exists(entry["output"]):
            report.done_before += 1
        elif entry.get("event") == "failed" and not retry_failed:
            report.failed[item.name] = entry.get("error", "failed")
        else:
            if entry.get("event") == "failed":
                item.attempt += 1  # a fresh task, under a fresh idempotency key
            else:
                item.task_id = entry.get("task_id")
            todo.append(item)
    return todo


def _items(names: list[str]) -> Iterator[_Item]:
    stems = [str(Path(name).with_suffix("")) for name in names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    for name, stem in zip(names, stems, strict=True):
        yield _Item(name, name if stem in shared else stem)


def _line(**entry: Any) -> str:
    return json.dumps(entry, ensure_ascii=False)


def extension_for(content_type: str) -> str:
    media_type, _ = parse_content_type(content_type)
    return _EXTENSIONS.get(media_type) or mimetypes.guess_extension(media_type) or ".bin"


def _tally(outcome: tuple[str, str, str], report: BatchReport) -> None:
    name, kind, detail = outcome
    if kind == "done":
        report.done += 1
    elif kind == "failed":
        report.failed[name] = detail
    else:
        report.pending.append(name)


def _bar(report: BatchReport, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    already = report.done_before + len(report.failed)
    return tqdm(total=report.total, initial=already, unit=" files", dynamic_ncols=True)
