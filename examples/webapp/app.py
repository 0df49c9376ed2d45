"""A web application that serves a model it never imports: the model lives in workers elsewhere.

    export INFERBOX_BROKER_URL=http://127.0.0.1:8000 INFERBOX_TOKEN=app-secret
    gunicorn -w 2 --threads 16 -b 127.0.0.1:5000 'examples.webapp.app:create_app()'

Each request handler calls the broker through ``client_sdk`` — one ``POST /predict?wait=`` per
request — and answers with what a worker's model said and which model version said it. The app
holds no model, no GPU and no model dependency (not even numpy), so it starts in a second and
scales like any web app; a new model version rolls out by restarting the workers, never the app.

When no worker answers within ``WEBAPP_TIMEOUT`` seconds (none running, or all busy) the app does
not hang: it answers ``503`` "busy, try later" with a ``Retry-After`` and the task's id. The task
stays queued for ``WEBAPP_TTL`` seconds, so the first worker to come up answers it and
``GET /answers/<task_id>`` returns that answer then. A broker that cannot be reached is a quick
``503`` too; the app itself stays up (``GET /healthz``).

Settings, read once in ``create_app``: ``INFERBOX_BROKER_URL``, ``INFERBOX_TOKEN`` (a client
token), ``WEBAPP_QUEUE`` (``digits``), ``WEBAPP_TIMEOUT`` (5 seconds), ``WEBAPP_TTL`` (300 s).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request

from client_sdk import BrokerUnavailable, Client, NotFound, TaskError, TaskTimeout

PIXELS, MAX_INTENSITY = 64, 16  # 8x8 digits, intensities 0-16, as the digits model takes them


@dataclass(frozen=True)
class Config:
    broker_url: str
    token: str | None = None
    queue: str = "digits"
    timeout: float = 5.0  # seconds a request waits for the model before answering "busy"
    ttl: int = 300  # seconds a request nobody answered stays queued for the next worker

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        return cls(
            broker_url=environ.get("INFERBOX_BROKER_URL", "http://127.0.0.1:8000"),
            token=environ.get("INFERBOX_TOKEN") or None,
            queue=environ.get("WEBAPP_QUEUE", "digits"),
            timeout=float(environ.get("WEBAPP_TIMEOUT", "5")),
            ttl=int(environ.get("WEBAPP_TTL", "300")),
        )


bp = Blueprint("webapp", __name__, template_folder="templates")


@dataclass(frozen=True)
class _Model:
    """What the request threads of one process share: the broker client and the settings."""

    client: Client
    config: Config


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env(os.environ)
    app = Flask(__name__)
    # One client per process, shared by the request threads; a failed connection is retried
    # once, so an unreachable broker costs a request a second or two, not a hang.
    client = Client(config.broker_url, token=config.token, timeout=10, retries=1)
    app.extensions["webapp"] = _Model(client, config)
    app.register_blueprint(bp)
    return app


def _model() -> _Model:
    return current_app.extensions["webapp"]  # type: ignore[no-any-return]


@bp.get("/")
def index() -> str:
    return render_template("index.html", timeout=_model().config.timeout)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.post("/classify")
def classify() -> Response:
    client, config = _model().client, _model().config
    pixels = _pixels(request.get_json(silent=True))
    if pixels is None:
        return _answer(400, status="bad_request",
                       message=f"send {{\"pixels\": [{PIXELS} numbers 0-{MAX_INTENSITY}]}}")
    try:
        task = client.submit({"pixels": pixels}, queue=config.queue, wait=config.timeout,
                             ttl=config.ttl)  # fmt: skip
        if not task.finished:
            return _busy(task.id, config.timeout)
        return _model_answer(task.id, task.result(), task.model_version)
    except TaskError as exc:
        return _answer(502, status="failed", message=f"the model failed: {exc}")
    except BrokerUnavailable:
        return _unavailable()


@bp.get("/answers/<task_id>")
def answer(task_id: str) -> Response:
    """The answer to a request that was told "busy", once a worker has given it."""
    task = _model().client.task(task_id)
    try:
        result = task.result(timeout=0)
    except TaskTimeout:
        return _answer(202, status="pending", task_id=task_id,
                       message="no worker has answered yet; try again later")
    except NotFound:
        return _answer(404, status="unknown", message="no such request")
    except TaskError as exc:
        return _answer(410, status=str(exc.doc.get("status")), message=str(exc))
    except BrokerUnavailable:
        return _unavailable()
    return _model_answer(task_id, result, task.model_version)


def _pixels(body: Any) -> list[float] | None:
    values = body.get("pixels") if isinstance(body, dict) else None
    if not isinstance(values, list) or len(values) != PIXELS:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               and 0 <= v <= MAX_INTENSITY for v in values):  # fmt: skip
        return None
    return values


def _model_answer(task_id: str, result: dict[str, Any], version: str | None) -> Response:
    return _answer(200, status="ok", digit=result["digit"], confidence=result["confidence"],
                   model_version=version, task_id=task_id)  # fmt: skip


def _busy(task_id: str, timeout: float) -> Response:
    response = _answer(503, status="busy", task_id=task_id, answer_url=f"/answers/{task_id}",
                       message=f"no model answered within {timeout:g} s: the request is queued; "
                               "try again later")  # fmt: skip
    response.headers["Retry-After"] = "10"
    return response


def _unavailable() -> Response:
    response = _answer(503, status="unavailable",
                       message="the model service cannot be reached; try again later")
    response.headers["Retry-After"] = "30"
    return response


def _answer(status_code: int, **fields: Any) -> Response:
    response = jsonify(fields)
    response.status_code = status_code
    return response
