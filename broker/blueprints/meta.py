"""The broker about itself: health and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..openapi import spec
from .common import mailbox

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    report = mailbox().health()
    healthy = all(value == "ok" for value in report.values())
    response = jsonify({"status": "ok" if healthy else "unavailable", **report})
    response.status_code = 200 if healthy else 503
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(spec())
