"""inferbox broker: a thin HTTP front over an inbox/outbox blob store and a Redis task index."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
