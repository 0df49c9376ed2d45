"""/openapi.json is a valid OpenAPI 3.1 document that describes exactly the registered routes."""

from __future__ import annotations

import re

import fakeredis
from openapi_spec_validator import validate

from broker import Settings, create_app
from broker.queue import TaskQueue
from storage import open_store


def make_app():
    queue = TaskQueue(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    return create_app(Settings(storage_url="memory://"), queue=queue, store=open_store("memory://"))


def test_served_spec_is_valid_and_matches_the_routes():
    app = make_app()
    spec = app.test_client().get("/openapi.json").json
    validate(spec)
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules() if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert documented == routes


def test_every_documented_path_is_in_docs_api_md():
    from pathlib import Path

    prose = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    spec = make_app().test_client().get("/openapi.json").json
    for path in spec["paths"]:
        assert re.sub(r"\{task_id\}", "<id>", path) in prose, path
