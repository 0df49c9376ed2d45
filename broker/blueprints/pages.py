"""The pages people open in a browser: ``/`` to try the broker, ``/dashboard`` to watch it.

Plain HTML with a little JavaScript (``broker/static/``): the pages hold no secrets and need no
login of their own; they call the JSON API with the token typed into them.
"""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def try_it() -> str:
    return render_template("try.html")


@bp.get("/dashboard")
def dashboard() -> str:
    return render_template("dashboard.html")
