"""examples/webapp end to end, all real processes: the app under gunicorn calls the broker through
client_sdk; the model runs only in worker processes, which come, go and change version while the
app keeps running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.conftest import CLIENT_TOKEN, ROOT, Broker, child_env, free_port
from worker.examples import digits

pytestmark = pytest.mark.redis

TIMEOUT = 2.0  # the app's WEBAPP_TIMEOUT
SAMPLES = [digits.sample(i)[0] for i in range(6)]


@pytest.fixture
def webapp(broker: Broker) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = child_env(INFERBOX_BROKER_URL=broker.url, INFERBOX_TOKEN=CLIENT_TOKEN,
                    WEBAPP_TIMEOUT=str(TIMEOUT), WEBAPP_QUEUE="digits")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "8",
                                "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                                "examples.webapp.app:create_app()"], cwd=ROOT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.1)
    try:
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def classify(url: str, pixels: dict) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.post(f"{url}/classify", json=pixels, timeout=30)
    return response, time.monotonic() - started


def first_answer(url: str, pixels: dict) -> requests.Response:
    """Classify until a worker that is starting (numpy, the model) answers, within a minute."""
    deadline = time.monotonic() + 60
    while True:
        response, _ = classify(url, pixels)
        if response.status_code == 200:
            return response
        assert response.json()["status"] == "busy" and time.monotonic() < deadline, response.text


def spawn_digits_worker(broker: Broker, version: str) -> subprocess.Popen:
    return broker.spawn_worker("", "--queue", "digits", "--handler",
                               "worker.examples.digits:predict", "--model-version", version,
                               worker_id=f"digits-{version}")  # fmt: skip


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_the_app_serves_answers_from_workers_stays_up_without_them_and_follows_versions(
    broker: Broker, webapp: tuple[str, subprocess.Popen]
) -> None:
    url, app = webapp
    assert requests.get(url, timeout=5).ok  # the page

    # No worker: "busy, try later" within the app's timeout, the request queued meanwhile.
    busy, elapsed = classify(url, SAMPLES[0])
    assert busy.status_code == 503 and busy.json()["status"] == "busy", busy.text
    print(f"busy answer after {elapsed:.2f} s (the app's timeout: {TIMEOUT} s)")
    assert TIMEOUT - 0.2 <= elapsed < TIMEOUT + 1.5
    assert busy.headers["Retry-After"]
    queued = busy.json()["answer_url"]
    assert requests.get(f"{url}{queued}", timeout=10).status_code == 202

    # A worker elsewhere: answers through the app, the model's own, with its version.
    v1 = spawn_digits_worker(broker, "digits-v1")
    assert first_answer(url, SAMPLES[0]).json()["model_version"] == "digits-v1"
    for pixels in SAMPLES:
        response, _ = classify(url, pixels)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["digit"] == digits.predict(pixels)["digit"]
        assert body["model_version"] == "digits-v1"
    later = requests.get(f"{url}{queued}", timeout=10)  # the first worker answered the queued one
    assert later.status_code == 200 and later.json()["digit"] == digits.predict(SAMPLES[0])["digit"]

    # A new model version: restart the workers only; the app process never restarts.
    stop(v1)
    spawn_digits_worker(broker, "digits-v2")
    assert first_answer(url, SAMPLES[1]).json()["model_version"] == "digits-v2"
    assert all(classify(url, pixels)[0].json()["model_version"] == "digits-v2"
               for pixels in SAMPLES)  # fmt: skip
    assert app.poll() is None

    # Bad input is the app's own 400; the broker gone is a quick 503, and the app stays up.
    assert requests.post(f"{url}/classify", json={"pixels": [1]}, timeout=10).status_code == 400
    broker.stop_workers()
    broker.process.send_signal(signal.SIGTERM)
    broker.process.wait(timeout=30)
    gone, elapsed = classify(url, SAMPLES[0])
    assert gone.status_code == 503 and gone.json()["status"] == "unavailable"
    assert elapsed < 10
    assert requests.get(f"{url}/healthz", timeout=5).ok and app.poll() is None


def test_the_app_imports_no_model() -> None:
    code = ("import sys, examples.webapp.app; "
            "print(','.join(m for m in ('worker', 'numpy', 'sklearn', 'tensorflow', 'broker') "
            "if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True, env=child_env())  # fmt: skip
    assert result.stdout.strip() == ""
