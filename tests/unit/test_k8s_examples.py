"""examples/k8s/ is what people apply: every file parses, every container runs an entry point
with arguments and INFERBOX_* variables the code reads, every Secret key referenced exists, and
the KEDA ScaledObject scales the worker Deployment on the broker's queue numbers down to zero."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from broker.cli import _parser as broker_parser
from worker.cli import ENVIRONMENT as WORKER_ENV
from worker.cli import build_parser as worker_parser

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "k8s"
SETTINGS_SOURCE = (ROOT / "broker" / "settings.py").read_text()


def documents() -> list[dict]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in documents() if doc["kind"] == kind}


def containers() -> list[dict]:
    return [c for d in by_kind("Deployment").values() for c in d["spec"]["template"]["spec"]
            ["containers"]]  # fmt: skip


def test_every_file_parses_into_named_objects():
    docs = documents()
    assert {doc["kind"] for doc in docs} >= {"Deployment", "Service", "Secret", "ScaledObject",
                                             "TriggerAuthentication"}  # fmt: skip
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]
    for deployment in by_kind("Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("container", containers(), ids=lambda c: c["name"])
def test_containers_run_entry_points_with_settings_the_code_reads(container):
    command, env = container["command"], {e["name"] for e in container["env"]}
    if command[0] == "inferbox-broker":
        broker_parser().parse_args(command[1:])
        for name in env:
            assert name.startswith("AWS_") or f'"{name.removeprefix("INFERBOX_")}"' in \
                SETTINGS_SOURCE, name
    else:
        assert command[0] == "inferbox-worker"
        worker_parser({}).parse_args(command[1:])
        assert env <= set(WORKER_ENV.values())


def test_every_secret_key_referenced_exists():
    secret = by_kind("Secret")["inferbox"]["stringData"]
    references = [e["valueFrom"]["secretKeyRef"] for c in containers() for e in c["env"]
                  if "valueFrom" in e]  # fmt: skip
    references += by_kind("TriggerAuthentication")["inferbox-admin"]["spec"]["secretTargetRef"]
    assert references
    for ref in references:
        assert ref["name"] == "inferbox" and ref["key"] in secret, ref


def test_keda_scales_the_workers_on_the_queue_down_to_zero():
    scaled = by_kind("ScaledObject")["inferbox-worker-digits"]["spec"]
    worker = by_kind("Deployment")[scaled["scaleTargetRef"]["name"]]
    worker_env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]
                  ["containers"][0]["env"]}  # fmt: skip
    assert scaled["minReplicaCount"] == 0 and scaled["maxReplicaCount"] >= 1
    service = by_kind("Service")["inferbox-broker"]
    port = service["spec"]["ports"][0]["port"]
    watched = set()
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert re.fullmatch(rf"http://inferbox-broker(\.[a-z-]+\.svc)?:{port}/queues", meta["url"])
        field = re.fullmatch(r'queues\.#\(name=="([^"]+)"\)\.(depth|in_flight)',
                             meta["valueLocation"])  # fmt: skip
        assert field and field.group(1) == worker_env["INFERBOX_QUEUE"]
        watched.add(field.group(2))
        assert trigger["authenticationRef"]["name"] in by_kind("TriggerAuthentication")
    assert watched == {"depth", "in_flight"}  # a running task keeps its worker


def test_the_broker_deployment_points_at_the_service_the_workers_use():
    broker = by_kind("Deployment")["inferbox-broker"]
    container = broker["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert broker["spec"]["replicas"] >= 2  # several brokers, one Redis, one bucket
    worker = by_kind("Deployment")["inferbox-worker-digits"]
    env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]
           ["env"]}  # fmt: skip
    assert env["INFERBOX_BROKER_URL"] == "http://inferbox-broker:8000"


def test_docs_scaling_explains_the_examples():
    text = (ROOT / "docs" / "scaling.md").read_text()
    for needle in ("examples/k8s", "ScaledObject", "docker compose", "/metrics", "/queues"):
        assert needle in text, needle
