"""What the memory backend adds to the contract: named stores shared within the process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage import StorageError, open_store
from storage.memory import forget_named_stores


@pytest.fixture(autouse=True)
def _no_named_stores_left_behind() -> Iterator[None]:
    forget_named_stores()
    yield
    forget_named_stores()


def test_plain_memory_url_is_always_a_fresh_store() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    first.put("k", b"x")
    assert not second.exists("k")
    assert first.url == "memory://"


def test_named_memory_store_is_shared_within_the_process() -> None:
    writer = open_store("memory://results")
    writer.put("k", b"shared")
    assert open_store("memory://results").read_bytes("k") == b"shared"
    assert open_store("memory://results") is writer
    assert not open_store("memory://other").exists("k")
    assert writer.url == "memory://results"


def test_forget_named_stores_starts_over() -> None:
    open_store("memory://results").put("k", b"x")
    forget_named_stores()
    assert not open_store("memory://results").exists("k")


@pytest.mark.parametrize("url", ["memory://name/path", "memory://name?x=1", "memory:name"])
def test_bad_memory_urls(url: str) -> None:
    with pytest.raises(StorageError):
        open_store(url)
