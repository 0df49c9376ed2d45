"""A resumable batch job: every file of a folder (or glob) through a queue, one result file each.

``run_batch`` submits every input not yet done, writes each result as it completes, and keeps a
journal (``.inferbox-batch.jsonl`` in the output folder) of what was submitted and finished.
Run it again after an interruption and it picks up where it stopped: finished files are
skipped, submitted ones are waited for (never submitted again), the rest are submitted. Each
submit carries an idempotency key derived from the file's path and content, so even a submit
whose task id never reached the journal (killed in between) names the same task when repeated.
"""

from __future__ import annotations

import glob
import hashlib
import json
import mimetypes
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_sdk.client import Client
from client_sdk.errors import TaskError, TaskTimeout
from client_sdk.http import parse_content_type

__all__ = ["JOURNAL", "BatchReport", "find_inputs", "run_batch"]

JOURNAL = ".inferbox-batch.jsonl"
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

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def summary(self) -> str:
        lines = [f"{self.total} inputs: {self.done_before + self.done} done "
                 f"({self.done_before} earlier, {self.done} now), {len(self.failed)} failed, "
                 f"{len(self.pending)} pending; {self.submitted} submitted in this run"]
        lines += [f"  failed  {name}: {error.splitlines()[0][:200]}"
                  for name, error in sorted(self.failed.items())]  # fmt: skip
        if self.pending:
            lines.append("  run the same command again to wait for the pending ones")
        return "\n".join(lines)


def find_inputs(source: str) -> tuple[Path, list[Path]]:
    """(base folder, input files): every file under a folder, or the files a glob matches."""
    root = Path(source)
    if root.is_dir():
        files = [p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root))]
        return root, sorted(files)
    files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
    if not files:
        return root.parent, []
    base = Path(os.path.commonpath([str(p.parent) for p in files]))
    return base, files


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


class _Journal:
    """Append-only JSON lines; a torn last line (killed mid-write) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return state
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            state.setdefault(entry["file"], {}).update(entry)
        return state

    def write(self, **entry: Any) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as journal:
            journal.write(line)
            journal.flush()


@dataclass
class _Item:
    name: str  # path relative to the base, posix style
    path: Path
    output_stem: str
    attempt: int = 0
    task_id: str | None = None


def run_batch(
    client: Client, source: str, out_dir: Path, *, queue: str, concurrency: int = 16,
    timeout: float | None = None, retry_failed: bool = False, progress: bool = True,
    **options: Any,
) -> BatchReport:  # fmt: skip
    """Run the batch job (see the module docstring); returns what happened."""
    base, files = find_inputs(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = _Journal(out_dir / JOURNAL)
    state = journal.read()
    report = BatchReport(total=len(files))
    todo = []
    for item in _items(base, files):
        entry = state.get(item.name, {})
        item.attempt = int(entry.get("attempt", 0))
        if entry.get("event") == "done" and (out_dir / entry["output"]).is_file():
            report.done_before += 1
        elif entry.get("event") == "failed" and not retry_failed:
            report.failed[item.name] = entry.get("error", "failed")
        else:
            if entry.get("event") == "failed":
                item.attempt += 1  # a fresh task, under a fresh idempotency key
            else:
                item.task_id = entry.get("task_id")
            todo.append(item)
    bar = _bar(report, enabled=progress)
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="inferbox-batch") as pool:
            _submit_all(pool, client, todo, journal, queue, report, options)
            waits = [pool.submit(_finish, client, item, out_dir, journal, timeout)
                     for item in todo if item.task_id]  # fmt: skip
            for future in as_completed(waits):
                _tally(future.result(), report)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return report


def _items(base: Path, files: list[Path]) -> Iterator[_Item]:
    names = [p.relative_to(base).as_posix() for p in files]
    stems = [str(Path(name).with_suffix("")) for name in names]
    shared = {stem for stem in stems if stems.count(stem) > 1}
    for path, name, stem in zip(files, names, stems, strict=True):
        yield _Item(name, path, name if stem in shared else stem)


def _submit_all(
    pool: ThreadPoolExecutor, client: Client, todo: list[_Item], journal: _Journal, queue: str,
    report: BatchReport, options: dict[str, Any],
) -> None:  # fmt: skip
    def submit(item: _Item) -> None:
        key = _idempotency_key(item, queue)
        item.task_id = client.submit(item.path, queue=queue, idempotency_key=key, **options).id
        journal.write(file=item.name, event="submitted", task_id=item.task_id,
                      attempt=item.attempt)  # fmt: skip

    fresh = [item for item in todo if not item.task_id]
    for future in as_completed([pool.submit(submit, item) for item in fresh]):
        future.result()
    report.submitted = len(fresh)


def _idempotency_key(item: _Item, queue: str) -> str:
    digest = hashlib.sha256(item.path.read_bytes()).hexdigest()
    name = hashlib.sha256(f"{queue}\n{item.name}\n{item.attempt}".encode()).hexdigest()
    return f"inferbox-batch-{name[:24]}-{digest[:24]}"


def _finish(
    client: Client, item: _Item, out_dir: Path, journal: _Journal, timeout: float | None
) -> tuple[str, str, str]:
    """Wait for one task and write its result: (name, done|failed|pending, detail)."""
    assert item.task_id is not None
    task = client.task(item.task_id)
    try:
        body, content_type = task.result(timeout, raw=True)
    except TaskTimeout:
        return item.name, "pending", ""
    except TaskError as exc:
        error = str(exc.doc.get("error") or exc)
        journal.write(file=item.name, event="failed", task_id=item.task_id, error=error,
                      attempt=item.attempt)  # fmt: skip
        return item.name, "failed", error
    extension = extension_for(content_type)
    output = f"{item.output_stem}{extension}"
    target = out_dir / output
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(body)
    os.replace(temporary, target)
    journal.write(file=item.name, event="done", task_id=item.task_id, output=output,
                  attempt=item.attempt)  # fmt: skip
    return item.name, "done", output


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
