"""Fixtures most unit tests share: a memory store, the broker app on it (``brokerkit``'s tokens
and the fake clock) and a test client of it. A module that needs another defines its own."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from storage import BlobStore, open_store
from tests.conftest import FakeClock
from tests.unit.brokerkit import make_app


@pytest.fixture
def store() -> BlobStore:
    return open_store("memory://")


@pytest.fixture
def app(store: BlobStore, clock: FakeClock) -> Flask:
    return make_app(store, clock)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()
