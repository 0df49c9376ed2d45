"""What the S3 backend adds to the contract: URLs, prefixes, multipart aborts, its errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from storage import (
    BlobNotFound,
    InvalidKey,
    InvalidMetadata,
    StorageError,
    StorageUnavailable,
    open_store,
)
from storage.s3 import S3Store

MiB = 1024 * 1024
BUCKET = "inferbox-test"


@pytest.fixture
def s3_client(aws_env: None) -> Iterator[Any]:
    """A boto3 client inside moto's in-process mock, with an empty bucket."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _count_calls(client: Any, *operations: str) -> dict[str, int]:
    counts = dict.fromkeys(operations, 0)

    def count(event_name: str, **_: Any) -> None:
        counts[event_name.rsplit(".", 1)[-1]] += 1

    for operation in operations:
        client.meta.events.register(f"after-call.s3.{operation}", count)
    return counts


@pytest.mark.parametrize(
    ("url", "prefix", "canonical"),
    [
        ("s3://bucket", "", "s3://bucket"),
        ("s3://bucket/", "", "s3://bucket"),
        ("s3://bucket/inferbox", "inferbox/", "s3://bucket/inferbox"),
        ("s3://bucket/a/b/", "a/b/", "s3://bucket/a/b"),
    ],
)
def test_urls(aws_env: None, url: str, prefix: str, canonical: str) -> None:
    store = open_store(url)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == ("bucket", prefix, canonical)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/a//b", "s3://b/../x"])
def test_bad_s3_urls(aws_env: None, url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)


def test_region_comes_from_aws_region(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    store = open_store("s3://bucket")
    assert isinstance(store, S3Store)
    assert store.client.meta.region_name == "eu-west-3"


def test_keys_live_under_the_url_prefix(s3_client: Any) -> None:
    first, second = open_store(f"s3://{BUCKET}/one"), open_store(f"s3://{BUCKET}/two")
    whole = open_store(f"s3://{BUCKET}")
    first.put("k", b"1")
    second.put("k", b"2")
    assert [first.read_bytes("k"), second.read_bytes("k")] == [b"1", b"2"]
    assert list(first.list()) == ["k"]
    assert list(whole.list()) == ["one/k", "two/k"]
    names = [item["Key"] for item in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert names == ["one/k", "two/k"]


def test_prefix_and_key_must_fit_s3s_limit(s3_client: Any) -> None:
    store = open_store(f"s3://{BUCKET}/prefix")
    store.put("k" * 1017, b"x")
    with pytest.raises(InvalidKey):
        store.put("k" * 1018, b"x")
    with pytest.raises(InvalidKey):
        store.put("\u00e9" * 600, b"x")  # 600 characters, 1200 bytes


def test_failed_multipart_upload_is_aborted(
    s3_client: Any, generated_stream: type, source_errors: tuple
) -> None:
    calls = _count_calls(s3_client, "CreateMultipartUpload", "AbortMultipartUpload")
    store = S3Store(BUCKET, client=s3_client)
    store.put("k", b"old")
    with pytest.raises(source_errors[0]):
        store.put("k", generated_stream(30 * MiB, fail_after=17 * MiB))
    assert calls == {"CreateMultipartUpload": 1, "AbortMultipartUpload": 1}
    assert s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert store.read_bytes("k") == b"old"


def test_metadata_is_escaped_for_http_headers(s3_client: Any) -> None:
    store = S3Store(BUCKET, client=s3_client)
    metadata = {"task_id": "42", "a-b": "50%", "spaced": " x "}
    store.put("k", b"x", metadata=metadata)
    stored = s3_client.head_object(Bucket=BUCKET, Key="k")["Metadata"]
    assert stored == {"task-uid": "42", "a--b": "50%25", "spaced": "%20x%20"}
    assert store.head("k").metadata == metadata


def test_metadata_that_outgrows_s3s_limit_once_escaped(s3_client: Any) -> None:
    metadata = {"a_" * 32: "%" * 900}  # 964 characters, 2796 bytes escaped
    with pytest.raises(InvalidMetadata):
        S3Store(BUCKET, client=s3_client).put("k", b"x", metadata=metadata)
    assert open_store("memory://").put("k", b"x", metadata=metadata).metadata == metadata


def test_objects_that_are_not_valid_keys_are_not_listed(s3_client: Any) -> None:
    for name in ("folder/", "a//b", "ok", "./x"):
        s3_client.put_object(Bucket=BUCKET, Key=name, Body=b"")
    assert list(S3Store(BUCKET, client=s3_client).list()) == ["ok"]


def test_foreign_objects_read_with_their_own_metadata(s3_client: Any) -> None:
    s3_client.put_object(Bucket=BUCKET, Key="f", Body=b"abc", Metadata={"plain-name": "v"})
    info = S3Store(BUCKET, client=s3_client).head("f")
    assert (info.size, info.content_type, info.metadata) == (
        3,
        "binary/octet-stream",
        {"plain-name": "v"},
    )


def test_missing_bucket(s3_client: Any) -> None:
    store = S3Store("no-such-bucket", client=s3_client)
    with pytest.raises(StorageUnavailable) as caught:
        store.ping()
    assert "no-such-bucket" in str(caught.value)
    for call in (lambda: store.put("k", b"x"), lambda: store.get("k"), lambda: list(store.list())):
        with pytest.raises(StorageUnavailable) as caught:
            call()
        assert caught.value.__cause__ is not None
    # Real S3 answers HEAD with a bare 404 that cannot say which is missing; moto says.
    with pytest.raises((BlobNotFound, StorageUnavailable)):
        store.head("k")


def test_unreachable_endpoint(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.exceptions

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = open_store("s3://bucket")
    with pytest.raises(StorageUnavailable) as caught:
        store.ping()
    assert isinstance(caught.value.__cause__, botocore.exceptions.EndpointConnectionError)
    with pytest.raises(StorageUnavailable):
        store.get("k")


def test_close_leaves_a_given_client_open(s3_client: Any) -> None:
    with S3Store(BUCKET, client=s3_client) as store:
        store.put("k", b"x")
    assert s3_client.head_object(Bucket=BUCKET, Key="k")["ContentLength"] == 1


def test_without_boto3_opening_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("boto3", "boto3.s3", "boto3.s3.transfer"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StorageError, match=r"inferbox\[s3\]"):
        open_store("s3://bucket")
