"""``az://container/optional/prefix``: blobs as block blobs in an Azure Storage container.

azure-storage-blob is imported when a store is opened, never by ``import storage``: install
``inferbox[azure]``. The account and credential come from the standard Azure variables, the first
that applies:

1. ``AZURE_STORAGE_CONNECTION_STRING``: any connection string (account key, SAS, Azurite).
2. ``AZURE_STORAGE_ACCOUNT_URL`` (``https://<account>.blob.core.windows.net``, or any endpoint),
   else ``AZURE_STORAGE_ACCOUNT`` (the account name, on the public cloud), with the credential
   ``AZURE_STORAGE_KEY`` (shared key), else ``AZURE_STORAGE_SAS_TOKEN``, else azure-identity's
   ``DefaultAzureCredential`` (managed identity, ``AZURE_CLIENT_ID``/``AZURE_TENANT_ID``/
   ``AZURE_CLIENT_SECRET``, workload identity, an Azure CLI login, ...).

Guarantees:

- ``put`` is atomic. A blob smaller than one block (4 MiB) is a single Put Blob; a longer stream
  is read one block at a time, each staged as an uncommitted block, and the blob changes only when
  the block list is committed. If the stream raises, nothing is committed: the old blob (if any)
  stays, and Azure discards the uncommitted blocks by itself (within a week).
- ``get`` streams the body of one GET response, so the blob reads as it was when opened even if
  it is overwritten or deleted meanwhile. ``list`` pages through the container in name order
  (UTF-8 byte order, which is code point order), skipping names that are not valid keys.
- Keys live under the URL's prefix (``az://c/p`` keeps key ``k`` as blob ``p/k``). Prefix and key
  together must fit Azure's 1024 characters, else :class:`InvalidKey`; so must a key with a
  segment ending in ``.``, which Azure would not keep as given (URL paths drop trailing dots).
- Metadata round-trips exactly. Azure wants metadata names to be C# identifiers and trims header
  values, so names are stored as ``ib_`` plus the name with ``_`` written ``__`` and ``-`` written
  ``_h``, and values as ``=`` plus the value with ``%`` and spaces percent-encoded. Metadata that
  another program stored is returned as it is. Azure caps metadata at 8 KiB as stored: metadata
  that outgrows that once encoded raises :class:`InvalidMetadata`.
- A missing container or denied access raises :class:`StorageUnavailable` (the container is not
  created for you, as an S3 bucket is not).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from .base import DEFAULT_CONTENT_TYPE, MAX_POOL_CONNECTIONS, BlobStore
from .blob import Blob, BlobInfo
from .errors import BlobNotFound, InvalidKey, InvalidMetadata, StorageError, StorageUnavailable
from .keys import is_valid_key, validate_key
from .source import Source

BLOCK_SIZE = 4 * 1024 * 1024
MAX_BLOB_NAME_CHARS = 1024
MAX_STORED_METADATA_BYTES = 8192
METADATA_NAME_PREFIX = "ib_"
METADATA_VALUE_PREFIX = "="
_CONTAINER_NAME = re.compile(r"\$root|(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*")
_ENCODED_NAME = re.compile(r"ib_(?:[a-z0-9]|__|_h)+")
_META_HEADER = "x-ms-meta-"
# Quick retries: a broker request waits for them. The SDK's default backs off 15 s and more.
_RETRY: dict[str, Any] = {"retry_total": 3, "initial_backoff": 1, "increment_base": 2}


class AzureStore(BlobStore):
    """Blobs in ``container`` under ``prefix``. See the module docstring for what it guarantees.

    ``client`` is an ``azure.storage.blob.ContainerClient`` for ``container``; by default one is
    built from the environment (see the module docstring). It stays available as the ``client``
    attribute, and :meth:`close` closes it only if it was made here.
    """

    def __init__(self, container: str, prefix: str = "", *, client: Any = None) -> None:
        self._sdk = _import_sdk()
        self.container = _check_container(container)
        self.prefix = _normalize_prefix(prefix)
        self.url = f"az://{container}/{self.prefix}".rstrip("/")
        self._owns_client = client is None
        with self._errors("connect to", None):
            self.client = client if client is not None else _default_client(container)

    @classmethod
    def from_url(cls, url: str) -> AzureStore:
        """``az://container`` or ``az://container/prefix``."""
        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise StorageError(
                f"bad Azure URL {url!r}: use az://container or az://container/prefix"
            )
        return cls(parts.netloc, parts.path.lstrip("/"))

    def close(self) -> None:
        """Close the client if this store created it."""
        if self._owns_client:
            self.client.close()

    # -- the contract ---------------------------------------------------------------------------

    def _put(
        self, key: str, source: Source, content_type: str, metadata: dict[str, str]
    ) -> BlobInfo:
        blob = self._blob(key)
        options = {
            "metadata": _encode_metadata(metadata),
            "content_settings": self._sdk.ContentSettings(content_type=content_type),
        }
        chunk = source.read(BLOCK_SIZE)  # the caller's stream: its errors pass through unchanged
        if len(chunk) < BLOCK_SIZE:
            with self._errors("store", key):
                blob.upload_blob(chunk, overwrite=True, **options)
            return BlobInfo(key, source.size, content_type, dict(metadata))
        block_ids = []
        while chunk:
            block_id = uuid.uuid4().hex  # all of one blob's ids must have the same length
            with self._errors("store", key):
                blob.stage_block(block_id, chunk)
            block_ids.append(block_id)
            chunk = source.read(BLOCK_SIZE)
        with self._errors("store", key):
            blob.commit_block_list(block_ids, **options)
        return BlobInfo(key, source.size, content_type, dict(metadata))

    def _get(self, key: str) -> Blob:
        with self._errors("read", key):
            headers, body = _download(self._blob(key))
        info = _info(key, headers)
        where = f"{key!r} in {self.url}"
        return Blob(info, _BodyReader(body), io_errors=self._error_types(), where=where)

    def _head(self, key: str) -> BlobInfo:
        with self._errors("read", key):
            properties = self._blob(key).get_blob_properties()
        return BlobInfo(
            key=key,
            size=int(properties.size),
            content_type=properties.content_settings.content_type or DEFAULT_CONTENT_TYPE,
            metadata=_decode_metadata(properties.metadata or {}),
        )

    def _delete(self, key: str) -> None:
        try:
            with self._errors("delete", key):
                self._blob(key).delete_blob(delete_snapshots="include")
        except StorageUnavailable as exc:
            if _error_code(exc.__cause__) != "BlobNotFound":
                raise

    def _list(self, prefix: str) -> Iterator[str]:
        pages = iter(self.client.list_blob_names(name_starts_with=self.prefix + prefix))
        while True:
            with self._errors("list", None):
                name = next(pages, None)
            if name is None:
                return
            key = name[len(self.prefix) :]
            if is_valid_key(key):
                yield key

    def _ping(self) -> None:
        with self._errors("reach", None):
            self.client.get_container_properties()

    # -- helpers --------------------------------------------------------------------------------

    def _blob(self, key: str) -> Any:
        name = self.prefix + key
        if len(name) > MAX_BLOB_NAME_CHARS:
            raise InvalidKey(key, f"with the prefix, longer than Azure's {MAX_BLOB_NAME_CHARS}")
        if any(segment.endswith(".") for segment in key.split("/")):
            raise InvalidKey(key, "Azure drops a trailing '.' from a name segment")
        return self.client.get_blob_client(name)

    def _error_types(self) -> tuple[type[BaseException], ...]:
        return (self._sdk.AzureError, OSError)

    @contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        """Convert the SDK's errors; let everything else through."""
        try:
            yield
        except self._error_types() as exc:
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: BaseException, action: str, key: str | None) -> StorageError:
        if key is not None and action == "read" and _error_code(exc) == "BlobNotFound":
            return BlobNotFound(key, self.url)
        what = f"{key!r} in {self.url}" if key is not None else self.url
        return StorageUnavailable(f"could not {action} {what}: {_first_line(exc)}")


class _BodyReader:
    """``read(n)`` over the chunks of a streamed HTTP body; ``close`` releases the connection."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._chunks: Iterator[bytes] = iter(body)
        self._buffer = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        self._body.response.close()


def _download(blob: Any) -> tuple[Mapping[str, str], Any]:
    """One GET of the whole blob: (response headers, a lazy iterator over the body).

    The public ``download_blob`` reads the blob in ranged GETs and buffers the first range (32 MiB
    by default); one streamed response is what keeps a reader on the version it opened, as S3
    does. This uses the SDK's generated operation, which ``download_blob`` itself calls.
    """

    def keep(pipeline_response: Any, body: Any, _headers: Any) -> tuple[Any, Any]:
        return pipeline_response.http_response.headers, body

    headers, body = blob._client.blob.download(decompress=False, cls=keep)
    return headers, body


def _info(key: str, headers: Mapping[str, str]) -> BlobInfo:
    stored = {
        name[len(_META_HEADER) :]: value
        for name, value in headers.items()
        if name.lower().startswith(_META_HEADER)
    }
    return BlobInfo(
        key=key,
        size=int(headers["Content-Length"]),
        content_type=headers.get("Content-Type") or DEFAULT_CONTENT_TYPE,
        metadata=_decode_metadata(stored),
    )


def _error_code(exc: BaseException | None) -> str:
    """Azure's error code (``BlobNotFound``, ``ContainerNotFound``, ...), or ``""``."""
    code = getattr(exc, "error_code", None)
    response = getattr(exc, "response", None)
    if not code and response is not None:  # the generated layer leaves the header unparsed
        code = response.headers.get("x-ms-error-code")
    return str(code or "")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _import_sdk() -> Any:
    try:
        import azure.core.exceptions
        import azure.storage.blob
    except ImportError as exc:
        raise StorageError(
            "az:// stores need azure-storage-blob: pip install 'inferbox[azure]'"
        ) from exc

    class Sdk:
        AzureError = azure.core.exceptions.AzureError
        ContentSettings = azure.storage.blob.ContentSettings

    return Sdk


def _default_client(container: str) -> Any:
    """A ContainerClient from the standard Azure environment variables (module docstring)."""
    from azure.storage.blob import BlobServiceClient

    env = os.environ
    connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
    if connection_string:
        service = BlobServiceClient.from_connection_string(
            connection_string, transport=_transport(), **_RETRY
        )
        return service.get_container_client(container)
    account_url = _account_url(env)
    credential = _credential(env)
    service = BlobServiceClient(account_url, credential=credential, transport=_transport(),
                                **_RETRY)  # fmt: skip
    return service.get_container_client(container)


def _transport() -> Any:
    """azure-core's requests transport over a session that keeps ``MAX_POOL_CONNECTIONS``
    connections for reuse (requests keeps 10), set up as azure-core sets up its own: no
    retries in the adapter, its retry policy does them."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    try:  # azure-core's adapter: larger socket blocks for uploads
        from azure.core.pipeline.transport._requests_basic import (
            BiggerBlockSizeHTTPAdapter as Adapter,
        )
    except ImportError:
        from requests.adapters import HTTPAdapter as Adapter  # type: ignore[assignment]
    session = requests.Session()
    adapter = Adapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False),
                      pool_maxsize=MAX_POOL_CONNECTIONS)  # fmt: skip
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=True)


def _account_url(env: Mapping[str, str]) -> str:
    url = env.get("AZURE_STORAGE_ACCOUNT_URL", "").strip()
    account = env.get("AZURE_STORAGE_ACCOUNT", "").strip()
    if url:
        return url
    if account:
        return f"https://{account}.blob.core.windows.net"
    raise StorageError(
        "az:// stores need an account: set AZURE_STORAGE_CONNECTION_STRING, or "
        "AZURE_STORAGE_ACCOUNT (or AZURE_STORAGE_ACCOUNT_URL) and a credential"
    )


def _credential(env: Mapping[str, str]) -> Any:
    key = env.get("AZURE_STORAGE_KEY", "").strip()
    if key:
        account = env.get("AZURE_STORAGE_ACCOUNT", "").strip()
        return {"account_name": account, "account_key": key} if account else key
    sas = env.get("AZURE_STORAGE_SAS_TOKEN", "").strip()
    if sas:
        return sas.lstrip("?")
    return _default_azure_credential()


def _default_azure_credential() -> Any:
    factory: Callable[[], Any]
    try:
        from azure.identity import DefaultAzureCredential as factory
    except ImportError as exc:
        raise StorageError(
            "no AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, and azure-identity is not "
            "installed for Entra ID sign-in: pip install 'inferbox[azure]'"
        ) from exc
    return factory()


def _check_container(container: str) -> str:
    if not _CONTAINER_NAME.fullmatch(container):
        raise StorageError(
            f"bad Azure container name {container!r}: 3-63 lower-case letters, digits and "
            "single hyphens, starting and ending with a letter or digit"
        )
    return container


def _normalize_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    try:
        validate_key(prefix)
    except InvalidKey as exc:
        raise StorageError(f"bad Azure prefix {prefix!r}: {exc.reason}") from exc
    return prefix + "/"


def _encode_metadata(metadata: dict[str, str]) -> dict[str, str]:
    encoded = {_encode_name(name): _encode_value(value) for name, value in metadata.items()}
    stored = sum(len(name) + len(value) for name, value in encoded.items())
    if stored > MAX_STORED_METADATA_BYTES:
        raise InvalidMetadata(
            f"metadata takes {stored} bytes once encoded for Azure, which allows "
            f"{MAX_STORED_METADATA_BYTES}"
        )
    return encoded


def _decode_metadata(stored: Mapping[str, str]) -> dict[str, str]:
    decoded = {}
    for name, value in stored.items():
        if _ENCODED_NAME.fullmatch(name) and value.startswith(METADATA_VALUE_PREFIX):
            decoded[_decode_name(name)] = unquote(value[len(METADATA_VALUE_PREFIX) :])
        else:
            decoded[name] = value
    return decoded


def _encode_name(name: str) -> str:
    return METADATA_NAME_PREFIX + name.replace("_", "__").replace("-", "_h")


def _decode_name(stored: str) -> str:
    body = stored[len(METADATA_NAME_PREFIX) :]
    return re.sub(r"_(.)", lambda match: "_" if match[1] == "_" else "-", body)


def _encode_value(value: str) -> str:
    return METADATA_VALUE_PREFIX + value.replace("%", "%25").replace(" ", "%20")
