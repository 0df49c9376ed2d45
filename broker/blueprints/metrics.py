"""Prometheus metrics (``broker.metrics`` computes them from Redis at scrape time)."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..auth import ADMIN
from ..metrics import registry_for
from .common import authorize, mailbox

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    authorize(ADMIN)
    body = generate_latest(registry_for(mailbox().queue))
    return Response(body, content_type=CONTENT_TYPE_LATEST)
