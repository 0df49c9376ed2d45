"""inferbox client SDK: submit payloads to an inferbox broker and fetch the results.

    from client_sdk import Client

    with Client("http://localhost:8000", token="...") as client:
        task = client.submit({"pixels": [...]}, queue="digits")
        print(task.result(timeout=30))

Every error is an ``InferboxError``; ``client_sdk.errors`` draws the tree.
"""

from client_sdk.client import Client, Task
from client_sdk.codec import PayloadRef
from client_sdk.errors import (
    APIError,
    AuthError,
    BadRequest,
    BrokerUnavailable,
    Conflict,
    InferboxError,
    LeaseLost,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    TaskCanceled,
    TaskError,
    TaskExpired,
    TaskFailed,
    TaskTimeout,
    TooManyRequests,
)

__all__ = [
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
]
