"""The public surface and the package boundaries the design promises."""

from __future__ import annotations

import subprocess
import sys

import pytest

import broker
import storage


def test_broker_exports():
    assert sorted(broker.__all__) == ["Settings", "create_app"]


def test_storage_exports():
    assert {"BlobStore", "open_store", "StorageError", "BlobNotFound"} <= set(storage.__all__)


@pytest.mark.parametrize("package", ["client_sdk", "worker"])
def test_clients_and_workers_never_import_the_broker(package):
    forbidden = ("broker", "storage", "flask", "redis", "boto3")
    code = (f"import sys, {package}; "
            f"print(','.join(m for m in {forbidden!r} if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == ""
