"""No Docker engine runs here, so the compose file and Dockerfile are checked as text: every
service's command is an installed entry point, every INFERBOX_* variable is one the code reads,
and every file the image copies exists."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

import yaml

from broker.settings import Settings
from worker.cli import ENVIRONMENT as WORKER_ENV

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def resolved(environment: dict[str, str]) -> dict[str, str]:
    return {name: DEFAULT.sub(r"\1", str(value)) for name, value in environment.items()}


def test_services_run_installed_entry_points():
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    services = compose()["services"]
    assert {"redis", "broker", "worker"} <= set(services)
    for name in ("broker", "worker"):
        assert services[name]["command"][0] in scripts, name
    assert "--appendonly" in services["redis"]["command"]


def test_broker_environment_is_what_the_settings_read():
    environment = resolved(compose()["services"]["broker"]["environment"])
    source = (ROOT / "broker" / "settings.py").read_text()
    for name in environment:
        assert f'"{name.removeprefix("INFERBOX_")}"' in source, f"{name} is never read"
    settings = Settings.from_env(environment)
    assert settings.redis_url == "redis://redis:6379/0" and settings.has_tokens


def test_worker_environment_is_what_the_worker_reads():
    environment = compose()["services"]["worker"]["environment"]
    assert set(environment) <= set(WORKER_ENV.values())


def test_dockerfile_copies_files_that_exist():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
