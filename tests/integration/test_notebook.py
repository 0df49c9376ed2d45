"""examples/colab_worker.ipynb, executed in a real Jupyter kernel against a live broker."""

from __future__ import annotations

import os
import queue
import threading
import time

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from client_sdk import Client
from tests.integration.conftest import CLIENT_TOKEN, ROOT, WORKER_TOKEN, Broker
from worker import Worker
from worker.examples import digits

pytestmark = pytest.mark.redis

NOTEBOOK = ROOT / "examples" / "colab_worker.ipynb"


def load(**parameters: object) -> nbformat.NotebookNode:
    """The notebook with its ``parameters`` cell extended, papermill-style."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    return notebook


@pytest.fixture
def kernel_env(broker: Broker, monkeypatch):
    monkeypatch.setenv("INFERBOX_BROKER_URL", broker.url)
    monkeypatch.setenv("INFERBOX_TOKEN", WORKER_TOKEN)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_the_notebook_runs_top_to_bottom_and_serves_tasks(broker: Broker, kernel_env):
    samples = [digits.sample(i) for i in range(12)]
    with Client(broker.url, token=CLIENT_TOKEN) as client:
        tasks = [client.submit(payload, queue="nb-full") for payload, _ in samples]
        notebook = load(QUEUE="nb-full", BATCH_SIZE=4, MAX_TASKS=12)
        NotebookClient(notebook, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()  # fmt: skip
        answers = [task.result(timeout=5) for task in tasks]
        versions = {task.info()["model_version"] for task in tasks}
    assert [a["digit"] for a in answers] == [label for _, label in samples]
    run_output = "".join(o.get("text", "") for o in notebook.cells[5].outputs)
    assert "12 succeeded" in run_output and "model busy" in run_output
    background = "".join(o.get("text", "") for o in notebook.cells[7].outputs)
    assert "stopped: True" in background
    assert len(versions) == 1 and None not in versions  # the handler's version, on every result


class Kernel:
    """A kernel run by hand: cells executed one by one, one of them interrupted."""

    def __init__(self) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(ROOT), env=dict(os.environ))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, source: str, timeout: float = 60) -> dict:
        reply = self.client.execute_interactive(source, timeout=timeout, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply

    def start(self, source: str) -> queue.Queue:
        """Execute ``source`` without waiting; the queue gets the reply when it ends."""
        replies: queue.Queue = queue.Queue()
        message_id = self.client.execute(source)

        def wait() -> None:
            while True:
                reply = self.client.get_shell_msg(timeout=120)
                if reply["parent_header"].get("msg_id") == message_id:
                    replies.put(reply)
                    return

        threading.Thread(target=wait, daemon=True).start()
        return replies

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def test_interrupting_the_notebook_worker_hands_its_tasks_to_another_at_once(
    broker: Broker, kernel_env
):
    notebook = load(QUEUE="nb-stop", BATCH_SIZE=4, MODEL_DELAY=120.0)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    kernel = Kernel()
    rescuer = Worker(broker.url, WORKER_TOKEN, queue="nb-stop", worker_id="rescuer", wait=20)
    try:
        for source in code[:3]:  # install, parameters, handler
            kernel.run(source)
        with Client(broker.url, token=CLIENT_TOKEN) as client:
            tasks = [client.submit(digits.sample(i)[0], queue="nb-stop") for i in range(8)]
            replies = kernel.start(code[3])  # Worker(...).run(predict): blocks in the kernel
            deadline = time.monotonic() + 60
            while any(t.info()["status"] != "running" for t in tasks):  # a batch in the model,
                assert time.monotonic() < deadline, "the notebook worker did not take 8 tasks"
                time.sleep(0.1)  # one fetched ahead
            assert {t.info()["worker_id"] for t in tasks} != {"rescuer"}
            rescuer.start(digits.predict, batched=False)  # idle: the queue is empty
            time.sleep(0.5)
            interrupted_at = time.monotonic()
            kernel.manager.interrupt_kernel()
            answers = [t.result(timeout=30) for t in tasks]
            all_done = time.monotonic() - interrupted_at
            docs = [t.info() for t in tasks]
        reply = replies.get(timeout=30)
        print(f"interrupt -> all 8 tasks completed by the second worker: {all_done:.3f} s")
        assert reply["content"]["status"] == "ok"  # run() returned cleanly, no traceback
        assert all_done < 1.0  # instead of the 60 s lease
        assert [a["digit"] for a in answers] == [digits.sample(i)[1] for i in range(8)]
        assert {d["worker_id"] for d in docs} == {"rescuer"}
        assert all(d["attempts"] == 1 for d in docs)  # the interrupted attempt did not count
        kernel.run("assert stats.interrupted and stats.released == 8, stats.summary()")
    finally:
        rescuer.stop()
        kernel.close()
