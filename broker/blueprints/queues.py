"""Queue statistics for operators and autoscalers."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, jsonify

from ..auth import ADMIN
from .common import authorize, known_query, mailbox

bp = Blueprint("queues", __name__)


@bp.get("/queues")
def list_queues() -> Response:
    authorize(ADMIN)
    known_query()
    return jsonify({"queues": [asdict(stats) for stats in mailbox().queue.stats()]})
