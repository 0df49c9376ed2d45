"""inferbox worker: pull tasks from a broker, run a model on each, post the results.

    from worker import Worker

    Worker("http://localhost:8000", token="...", queue="digits").run(predict)

Or from the shell: ``inferbox-worker --handler mymodule:predict`` (``--keras model.keras``
for a Keras model). ``worker.handler`` says how handlers are called, ``worker.errors`` draws
the error tree, ``worker.keras`` serves Keras models.
"""

from client_sdk.codec import Encoded
from worker.context import BatchContext, TaskContext
from worker.errors import Canceled, HandlerLoadError, WorkerError
from worker.handler import handler
from worker.stats import Stats
from worker.worker import Worker

__all__ = [
    "BatchContext",
    "Canceled",
    "Encoded",
    "HandlerLoadError",
    "Stats",
    "TaskContext",
    "Worker",
    "WorkerError",
    "handler",
]
