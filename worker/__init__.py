"""inferbox worker: pull tasks from a broker, run a model on each, post the results.

    from worker import Worker

    Worker("http://localhost:8000", token="...", queue="digits").run(predict)

Or from the shell: ``inferbox-worker --handler mymodule:predict``. ``worker.errors`` draws the
error tree.
"""

from worker.errors import HandlerLoadError, WorkerError
from worker.worker import Worker

__all__ = ["HandlerLoadError", "Worker", "WorkerError"]
