"""No Docker engine runs here, so the compose file and Dockerfile are checked as text: every
service's command is an installed entry point the CLI accepts, every INFERBOX_* variable is one
the code reads (the rest are boto3's AWS_* ones, matching MinIO's credentials), the bucket the
broker uses is the one created, workers can scale, and every file the image copies exists."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from broker.cli import _parser as broker_parser
from broker.settings import Settings
from worker.cli import ENVIRONMENT as WORKER_ENV
from worker.cli import build_parser as worker_parser

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")
AWS_VARIABLES = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def resolved(environment: dict[str, str]) -> dict[str, str]:
    return {name: DEFAULT.sub(r"\1", str(value)) for name, value in environment.items()}


def test_the_services_are_all_there():
    services = compose()["services"]
    assert set(services) == {"redis", "minio", "createbucket", "broker", "jobs", "worker"}
    assert "--appendonly" in services["redis"]["command"]
    assert services["minio"]["command"][:2] == ["server", "/data"]


def test_services_run_installed_entry_points_with_arguments_they_accept():
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    services = compose()["services"]
    for name in ("broker", "jobs"):
        command = services[name]["command"]
        assert command[0] == "inferbox-broker" and command[0] in scripts
        broker_parser().parse_args(command[1:])
    assert broker_parser().parse_args(services["jobs"]["command"][1:]).command == "jobs"
    command = services["worker"]["command"]
    assert command[0] == "inferbox-worker" and command[0] in scripts
    worker_parser({}).parse_args(command[1:])


@pytest.mark.parametrize("service", ["broker", "jobs"])
def test_broker_environment_is_what_the_settings_and_boto3_read(service):
    environment = resolved(compose()["services"][service]["environment"])
    source = (ROOT / "broker" / "settings.py").read_text()
    for name in environment:
        if name.startswith("INFERBOX_"):
            assert f'"{name.removeprefix("INFERBOX_")}"' in source, f"{name} is never read"
        else:
            assert name in AWS_VARIABLES, f"{name} is read by nobody"
    settings = Settings.from_env(environment)
    assert settings.redis_url == "redis://redis:6379/0" and settings.webhook_secret
    assert settings.storage_url.startswith("s3://")
    if service == "broker":
        assert settings.has_tokens and settings.workers > 1


def test_the_broker_stores_in_the_bucket_that_is_created_with_minios_credentials():
    services = compose()["services"]
    broker = resolved(services["broker"]["environment"])
    bucket = broker["INFERBOX_STORAGE_URL"].removeprefix("s3://").split("/")[0]
    assert f"local/{bucket}" in " ".join(services["createbucket"]["command"])
    minio = resolved(services["minio"]["environment"])
    assert broker["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert broker["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert broker["AWS_ENDPOINT_URL"] == "http://minio:9000"
    depends = services["broker"]["depends_on"]
    assert depends["createbucket"]["condition"] == "service_completed_successfully"
    assert depends["redis"]["condition"] == "service_healthy"


def test_workers_reach_the_broker_with_its_token_and_can_scale():
    services = compose()["services"]
    worker = services["worker"]
    environment = resolved(worker["environment"])
    assert set(environment) <= set(WORKER_ENV.values())
    assert environment["INFERBOX_BROKER_URL"] == "http://broker:8000"
    broker_tokens = resolved(services["broker"]["environment"])["INFERBOX_WORKER_TOKENS"]
    assert environment["INFERBOX_TOKEN"] in broker_tokens.split(",")
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=4 works
    assert worker["depends_on"]["broker"]["condition"] == "service_healthy"


def test_dockerfile_copies_files_that_exist_and_the_package_data_it_needs():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["broker"]
    for pattern in package_data:
        if pattern != "openapi.yaml":  # optional
            assert list((ROOT / "broker").glob(pattern)), pattern
    for page in ("templates/try.html", "templates/dashboard.html", "static/try.js"):
        assert (ROOT / "broker" / page).exists()
