"""``inferbox batch`` from a storage prefix to a storage prefix, as users run it: S3 on moto's HTTP
server (and Azure Blob storage on Azurite), a broker process storing its own tasks in the same
bucket and reading the inputs itself, a worker process, and the CLI killed halfway and resumed."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.azurite import azurite  # noqa: F401 - fixture
from tests.conftest import REDIS_URL
from tests.integration.conftest import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    ROOT,
    WORKER_TOKEN,
    Broker,
    child_env,
    free_port,
    wait_until_healthy,
)

pytestmark = pytest.mark.redis

INPUTS = 200


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """What every process needs to reach moto (and never a real account); reset after."""
    yield {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_endpoint,
           "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()


def start_broker(tmp_path: Path, storage_url: str, sources: str, env: dict[str, str]) -> Broker:
    port = free_port()
    broker_env = child_env(
        INFERBOX_REDIS_URL=REDIS_URL, INFERBOX_STORAGE_URL=storage_url,
        INFERBOX_PAYLOAD_SOURCES=sources, INFERBOX_CLIENT_TOKENS=CLIENT_TOKEN,
        INFERBOX_WORKER_TOKENS=WORKER_TOKEN, INFERBOX_ADMIN_TOKENS=ADMIN_TOKEN, **env,
    )  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "broker.cli", "--port", str(port),
                                "--log-level", "WARNING"], cwd=ROOT, env=broker_env)  # fmt: skip
    broker = Broker(f"http://127.0.0.1:{port}", process, tmp_path)
    wait_until_healthy(broker.url, process)
    return broker


def stop(broker: Broker) -> None:
    broker.stop_workers()
    broker.process.send_signal(signal.SIGTERM)
    broker.process.wait(timeout=30)


def batch_command(broker: Broker, source: str, out: str) -> list[str]:
    return [sys.executable, "-m", "client_sdk.cli", "--broker", broker.url, "--token",
            CLIENT_TOKEN, "batch", source, "-o", out, "--queue", "files", "--no-progress"]


def test_s3_prefix_to_s3_prefix_completes_and_resumes(real_redis, s3_env, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"scans-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(8)
    expected = {}
    for i in range(INPUTS):
        data = rng.randbytes(rng.randint(1, 4096))
        s3.put_object(Bucket=bucket, Key=f"in/batch-1/item-{i:03d}.bin", Body=data)
        expected[f"out/batch-1/item-{i:03d}.json"] = hashlib.sha256(data).hexdigest()
    broker = start_broker(tmp_path, f"s3://{bucket}/inferbox", f"s3://{bucket}/in", s3_env)
    try:
        broker.spawn_worker("slow_checksum", "--queue", "files", "--batch-size", "4",
                            worker_id="w-s3")  # fmt: skip
        command = batch_command(broker, f"s3://{bucket}/in/", f"s3://{bucket}/out/")
        env = child_env(**s3_env)
        first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE)

        def outputs() -> int:
            listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/batch-1/")
            return int(listed.get("KeyCount", 0))

        deadline = time.monotonic() + 180
        while outputs() < INPUTS // 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
        halfway = outputs()
        print(f"killed with {halfway} of {INPUTS} results written")
        assert INPUTS // 4 <= halfway < INPUTS, halfway

        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        assert second.returncode == 0, second.stdout + second.stderr
        print(second.stdout)
        assert "0 failed, 0 pending" in second.stdout
        done_earlier = int(second.stdout.split(" earlier")[0].rsplit("(", 1)[1])
        assert 0 < done_earlier <= halfway  # the journal in the bucket carried over

        listed = s3.list_objects_v2(Bucket=bucket, Prefix="out/batch-1/")["Contents"]
        results = {item["Key"]: json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])
                                           ["Body"].read())["sha256"] for item in listed}
        assert results == expected  # every input, each with its own correct result
        tasks = redis.Redis.from_url(REDIS_URL).keys("inferbox:task:*")
        assert len(tasks) == INPUTS  # resumed, never submitted twice
        inbox = s3.list_objects_v2(Bucket=bucket, Prefix="inferbox/inbox/")
        assert inbox["KeyCount"] == INPUTS  # the broker copied each input into its own inbox
        journal = [json.loads(line) for item in s3.list_objects_v2(
            Bucket=bucket, Prefix="out/.inferbox-batch/")["Contents"]
            for line in s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().splitlines()]
        via = {entry["file"]: entry["via"] for entry in journal if entry["event"] == "submitted"}
        assert len(via) == INPUTS and set(via.values()) == {"reference"}  # no bytes via the CLI
    finally:
        stop(broker)


def test_az_prefix_to_az_prefix_by_reference(real_redis, azurite, tmp_path):  # noqa: F811
    """The same path on Azure Blob storage: inputs read by the broker, results in the
    container."""
    service = azurite.service()
    container = f"scans-{uuid.uuid4().hex[:8]}"
    service.create_container(container)
    expected = {}
    for i in range(20):
        data = f"scan {i}".encode()
        service.get_blob_client(container, f"in/{i:02d}.bin").upload_blob(data)
        expected[f"out/{i:02d}.json"] = hashlib.sha256(data).hexdigest()
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    broker = start_broker(tmp_path, f"az://{container}/inferbox", f"az://{container}/in", env)
    try:
        broker.spawn_worker("slow_checksum", "--queue", "files", "--batch-size", "4",
                            worker_id="w-az")  # fmt: skip
        done = subprocess.run(batch_command(broker, f"az://{container}/in/",
                                            f"az://{container}/out/"),
                              cwd=ROOT, env=child_env(**env), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "20 by reference" in done.stdout
        results = {name: json.loads(service.get_blob_client(container, name).download_blob()
                                    .readall())["sha256"] for name in expected}  # fmt: skip
        assert results == expected
    finally:
        stop(broker)
        service.delete_container(container)
