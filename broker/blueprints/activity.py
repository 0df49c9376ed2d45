"""Recent activity for operators (the dashboard reads it): queues with their counters and
throughput, the workers seen recently, the recent failures."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, Response, jsonify

from ..activity import Activity
from ..auth import ADMIN
from ..task import iso
from .common import authorize, mailbox

bp = Blueprint("activity", __name__)


@bp.get("/activity")
def activity() -> Response:
    authorize(ADMIN)
    seen = Activity(mailbox().queue)
    workers = [{**asdict(worker), "last_seen": iso(worker.last_seen)} for worker in seen.workers()]
    failures = [{**asdict(failure), "at": iso(failure.at)} for failure in seen.failures()]
    return jsonify({
        "queues": [queue.to_doc() for queue in seen.queues()],
        "workers": workers,
        "failures": failures,
        "webhook_backlog": seen.webhook_backlog(),
    })
