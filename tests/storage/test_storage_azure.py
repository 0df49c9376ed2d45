"""What the Azure backend adds to the contract: URLs, credentials, blocks, metadata, its errors.

Everything runs against a real Azurite emulator (``tests/azurite.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
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
from storage.azure import AzureStore, _encode_metadata
from tests.azurite import ACCOUNT, ACCOUNT_KEY, AZURE_ENV_TO_CLEAR, Azurite

MiB = 1024 * 1024


@pytest.fixture
def container_client(azure_env: Azurite, azure_container: str) -> Iterator[Any]:
    """The SDK's own client for the test's container, to look behind the store's back."""
    with azure_env.service() as service:
        yield service.get_container_client(azure_container)


@pytest.fixture
def no_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AZURE_ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("url", "container", "prefix", "canonical"),
    [
        ("az://box", "box", "", "az://box"),
        ("az://box/", "box", "", "az://box"),
        ("az://inboxv0/inferbox", "inboxv0", "inferbox/", "az://inboxv0/inferbox"),
        ("az://my-box-1/a/b/", "my-box-1", "a/b/", "az://my-box-1/a/b"),
    ],
)
def test_urls(azure_env: Azurite, url: str, container: str, prefix: str, canonical: str) -> None:
    store = open_store(url)
    assert isinstance(store, AzureStore)
    assert (store.container, store.prefix, store.url) == (container, prefix, canonical)


@pytest.mark.parametrize(
    "url",
    ["az://", "az:///prefix", "az://Upper", "az://ab", "az://a--b", "az://-ab", "az://a_b",
     "az://" + "x" * 64, "az://box/a//b", "az://box/../x", "az://box?x=1"],
)  # fmt: skip
def test_bad_azure_urls(azure_env: Azurite, url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)


def test_keys_live_under_the_url_prefix(azure_container: str, container_client: Any) -> None:
    first = open_store(f"az://{azure_container}/one")
    second = open_store(f"az://{azure_container}/two")
    whole = open_store(f"az://{azure_container}")
    first.put("k", b"1")
    second.put("k", b"2")
    assert [first.read_bytes("k"), second.read_bytes("k")] == [b"1", b"2"]
    assert list(first.list()) == ["k"]
    assert list(whole.list()) == ["one/k", "two/k"]
    assert list(container_client.list_blob_names()) == ["one/k", "two/k"]


def test_prefix_and_key_must_fit_azures_limit(azure_container: str) -> None:
    store = open_store(f"az://{azure_container}/prefix")
    store.put("k" * 1017, b"x")
    with pytest.raises(InvalidKey):
        store.put("k" * 1018, b"x")


@pytest.mark.parametrize("key", ["dot.", "a./b", "a/b."])
def test_a_segment_ending_in_a_dot_is_an_invalid_key(azure_container: str, key: str) -> None:
    store = open_store(f"az://{azure_container}")
    with pytest.raises(InvalidKey, match="trailing"):
        store.put(key, b"x")
    assert list(store.list()) == []


def test_large_puts_are_committed_blocks(azure_container: str, container_client: Any) -> None:
    store = open_store(f"az://{azure_container}")
    store.put("small", b"x" * (4 * MiB - 1))
    store.put("large", b"y" * (9 * MiB))
    small = container_client.get_blob_client("small").get_block_list("all")
    large = container_client.get_blob_client("large").get_block_list("all")
    assert (len(small[0]), small[1]) == (0, [])  # one Put Blob: no block list
    assert [block.size for block in large[0]] == [4 * MiB, 4 * MiB, MiB]
    assert large[1] == [], "nothing left uncommitted"


def test_a_failed_stream_commits_nothing(
    azure_container: str, container_client: Any, generated_stream: type, source_errors: tuple
) -> None:
    store = open_store(f"az://{azure_container}")
    store.put("k", b"old", metadata={"v": "1"})
    with pytest.raises(source_errors[0]):
        store.put("k", generated_stream(12 * MiB, fail_after=9 * MiB))
    committed, uncommitted = container_client.get_blob_client("k").get_block_list("all")
    assert committed == [] and len(uncommitted) == 3  # staged, never committed
    assert store.read_bytes("k") == b"old"
    assert store.head("k").metadata == {"v": "1"}


def test_metadata_is_encoded_for_azure(azure_container: str, container_client: Any) -> None:
    store = open_store(f"az://{azure_container}")
    metadata = {"task_id": "42", "a-b": "50%", "spaced": " x ", "empty": ""}
    store.put("k", b"x", metadata=metadata)
    stored = container_client.get_blob_client("k").get_blob_properties().metadata
    assert stored == {"ib_task__id": "=42", "ib_a_hb": "=50%25", "ib_spaced": "=%20x%20",
                      "ib_empty": "="}  # fmt: skip
    assert store.head("k").metadata == metadata
    assert store.get("k").info.metadata == metadata


def test_encoded_metadata_over_azures_limit_is_refused() -> None:
    assert len(_encode_metadata({"a": "%" * 1024})) == 1
    with pytest.raises(InvalidMetadata, match="8192"):
        _encode_metadata({f"n{i}": "%" * 1024 for i in range(3)})


def test_foreign_blobs_read_with_their_own_metadata(
    azure_container: str, container_client: Any
) -> None:
    container_client.upload_blob("f", b"abc", metadata={"PlainName": "v", "ib_x": "no prefix"})
    info = open_store(f"az://{azure_container}").head("f")
    assert (info.size, info.content_type) == (3, "application/octet-stream")
    assert info.metadata == {"PlainName": "v", "ib_x": "no prefix"}


def test_blob_names_that_are_not_valid_keys_are_not_listed(
    azure_container: str, container_client: Any
) -> None:
    for name in ("folder/", "a//b", "ok", "/lead"):
        container_client.upload_blob(name, b"")
    assert list(open_store(f"az://{azure_container}").list()) == ["ok"]


def test_missing_container(azure_env: Azurite) -> None:
    store = open_store("az://no-such-container")
    with pytest.raises(StorageUnavailable) as caught:
        store.ping()
    assert "no-such-container" in str(caught.value)
    calls = [
        lambda: store.put("k", b"x"),
        lambda: store.get("k"),
        lambda: store.head("k"),
        lambda: store.delete("k"),
        lambda: list(store.list()),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable) as caught:
            call()
        assert not isinstance(caught.value, BlobNotFound)
        assert caught.value.__cause__ is not None


def test_unreachable_endpoint(no_azure_env: None) -> None:
    from azure.core.exceptions import AzureError
    from azure.storage.blob import ContainerClient

    client = ContainerClient("http://127.0.0.1:9/devstoreaccount1", "box",
                             credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                             retry_total=0)  # fmt: skip
    store = AzureStore("box", client=client)
    with pytest.raises(StorageUnavailable) as caught:
        store.ping()
    assert isinstance(caught.value.__cause__, AzureError)
    with pytest.raises(StorageUnavailable):
        store.get("k")


def test_account_url_and_shared_key_from_the_environment(
    azure_container: str, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", azurite.endpoint)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    store = open_store(f"az://{azure_container}")
    store.put("k", b"shared key")
    assert store.read_bytes("k") == b"shared key"


def test_sas_token_from_the_environment(
    azure_container: str, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(
        ACCOUNT, azure_container, account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )  # fmt: skip
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", azurite.endpoint)
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "?" + sas)
    store = open_store(f"az://{azure_container}")
    store.put("k", b"sas")
    assert list(store.list()) == ["k"]
    assert store.read_bytes("k") == b"sas"


def test_without_a_key_or_sas_entra_id_is_used(
    no_azure_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import DefaultAzureCredential

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", "someaccount")
    store = open_store("az://box")
    assert isinstance(store, AzureStore)
    assert store.client.url == "https://someaccount.blob.core.windows.net/box"
    assert isinstance(store.client.credential, DefaultAzureCredential)


def test_no_account_configured_says_which_variables(no_azure_env: None) -> None:
    with pytest.raises(StorageError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_store("az://box")


def test_close_leaves_a_given_client_open(azure_container: str, container_client: Any) -> None:
    with AzureStore(azure_container, client=container_client) as store:
        store.put("k", b"x")
    assert container_client.get_blob_client("k").get_blob_properties().size == 1


def test_without_the_sdk_opening_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("azure.storage.blob", "azure.core.exceptions"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StorageError, match=r"inferbox\[azure\]"):
        open_store("az://box")
