"""The public surface of client_sdk and worker, pinned so that changes to it are deliberate."""

from __future__ import annotations

import client_sdk
import worker
from client_sdk import errors

CLIENT_API = {
    "APIError",
    "AuthError",
    "BadRequest",
    "BrokerUnavailable",
    "Client",
    "Conflict",
    "InferboxError",
    "LeaseLost",
    "NotFound",
    "PayloadRef",
    "PayloadTooLarge",
    "ProtocolError",
    "Task",
    "TaskCanceled",
    "TaskError",
    "TaskExpired",
    "TaskFailed",
    "TaskTimeout",
    "TooManyRequests",
}


def test_client_sdk_exports_exactly_the_public_api() -> None:
    assert set(client_sdk.__all__) == CLIENT_API
    for name in client_sdk.__all__:
        assert getattr(client_sdk, name) is not None


def test_worker_exports_worker_and_its_errors() -> None:
    assert set(worker.__all__) == {"Worker", "WorkerError", "HandlerLoadError", "Canceled",
                                   "handler", "TaskContext", "BatchContext", "Encoded", "Stats"}


def test_exception_tree_matches_the_documented_one() -> None:
    parents = {
        errors.APIError: errors.InferboxError,
        errors.BadRequest: errors.APIError,
        errors.AuthError: errors.APIError,
        errors.NotFound: errors.APIError,
        errors.Conflict: errors.APIError,
        errors.LeaseLost: errors.Conflict,
        errors.PayloadTooLarge: errors.APIError,
        errors.TooManyRequests: errors.APIError,
        errors.BrokerUnavailable: errors.APIError,
        errors.TaskError: errors.InferboxError,
        errors.TaskFailed: errors.TaskError,
        errors.TaskCanceled: errors.TaskError,
        errors.TaskExpired: errors.TaskError,
        errors.TaskTimeout: errors.TaskError,
        errors.ProtocolError: errors.InferboxError,
        worker.WorkerError: errors.InferboxError,
        worker.HandlerLoadError: worker.WorkerError,
    }
    for child, parent in parents.items():
        assert child.__bases__ == (parent,), child
        assert child.__name__ in (errors.__doc__ or "") or child.__module__ == "worker.errors"


def test_task_failed_carries_the_worker_error_text() -> None:
    doc = {"task_id": "t1", "status": "failed", "error": "ValueError: bad pixel"}
    exc = errors.TaskFailed("task t1 failed", task_id="t1", doc=doc)
    assert (exc.task_id, exc.error, exc.doc) == ("t1", "ValueError: bad pixel", doc)


def test_api_error_renders_status_code_and_message() -> None:
    exc = errors.NotFound("no such task", status_code=404, error="not_found", body={})
    assert str(exc) == "404 not_found: no such task"
    assert str(errors.BrokerUnavailable("refused", error="unavailable")) == "unavailable: refused"
