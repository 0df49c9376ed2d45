"""Bearer tokens and the three roles.

========  =====================================================================
role      may
========  =====================================================================
client    submit tasks; read, wait on and cancel the tasks it submitted
worker    take tasks, heartbeat, post results
admin     everything, every task, queue statistics
compat    what a client and a worker may, at once: the function keys of the v0
          endpoints (``INFERBOX_COMPAT_KEYS``, docs/compat-azureml.md)
========  =====================================================================

Tokens are kept as SHA-256 digests and a presented token is compared with every known digest in
constant time. Wherever a token is configured (the ``INFERBOX_*_TOKENS`` variables or the tokens
file) it may be written as ``sha256:<hex digest>`` instead, so the secret itself is never stored
(``inferbox-broker hash-token`` prints the digest). A task's owner is ``t-`` and the first 16 hex
digits of its token's digest, so the same token owns the same tasks on every broker process.
Every compat key owns the same tasks (``keys.COMPAT_OWNER``), as the per-function keys of one
Azure Functions app all reached the same containers.
With no tokens configured the broker is open: every caller is an admin owning ``anonymous``
(the CLI binds such a broker to loopback).

The tokens file holds one token per line, ``#`` starts a comment::

    <client|worker|admin> <token or sha256:hex> [name] [queues=<name>,<name>...]

``queues=`` limits a worker token to taking from those queues (and a client token to submitting
to them); a name may use ``*`` and ``?`` wildcards (``queues=digits,img-*``). Admin tokens are
never limited.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from . import keys as K
from .errors import AuthError, Forbidden, SettingsError
from .settings import Settings

CLIENT, WORKER, ADMIN, COMPAT = "client", "worker", "admin", "compat"
ROLES = (CLIENT, WORKER, ADMIN, COMPAT)
COMPAT_GRANTS = frozenset({CLIENT, WORKER})
ANONYMOUS = "anonymous"


QUEUE_PATTERN = re.compile(r"[A-Za-z0-9*?][A-Za-z0-9._*?-]{0,63}")
DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Principal:
    role: str
    owner: str
    queues: tuple[str, ...] = ()  # queue name patterns this token is limited to; () for all

    def require(self, *roles: str) -> None:
        """Raise Forbidden unless this principal is an admin or holds one of ``roles``."""
        if self.role == COMPAT and COMPAT_GRANTS.intersection(roles):
            return
        if self.role != ADMIN and self.role not in roles:
            raise Forbidden(f"a {self.role} token may not do this (needs {' or '.join(roles)})")

    def may_use(self, queue: str) -> bool:
        return not self.queues or any(fnmatchcase(queue, pattern) for pattern in self.queues)

    def require_queues(self, queues: Iterable[str]) -> None:
        """Raise Forbidden unless this token may use every one of ``queues``."""
        refused = [queue for queue in queues if not self.may_use(queue)]
        if refused:
            raise Forbidden(f"this token may not use queue {refused[0]} (it is limited to "
                            f"{', '.join(self.queues)})")  # fmt: skip

    @property
    def sees_all(self) -> bool:
        return self.role == ADMIN


OPEN = Principal(ADMIN, ANONYMOUS)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


Entry = tuple[str, str, tuple[str, ...]]  # role, sha256 hex digest of the token, queues


def stored_digest(secret: str, where: str) -> str:
    """The digest a configured token stands for: ``sha256:<hex>`` as written, else hashed."""
    if secret.startswith("sha256:"):
        hexdigest = secret.removeprefix("sha256:").lower()
        if not DIGEST.fullmatch(hexdigest):
            raise SettingsError(f"{where}: a sha256: token needs 64 hex digits")
        return hexdigest
    return digest(secret)


class TokenTable:
    def __init__(self, entries: list[Entry]) -> None:
        self._entries = entries

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        entries: list[Entry] = [
            (role, stored_digest(token, f"INFERBOX_{role.upper()}_TOKENS"), ())
            for role, tokens in (
                (CLIENT, settings.client_tokens),
                (WORKER, settings.worker_tokens),
                (ADMIN, settings.admin_tokens),
                (COMPAT, settings.compat_keys),
            )
            for token in tokens
        ]
        if settings.tokens_file is not None:
            entries += _read_tokens_file(settings.tokens_file)
        return cls(entries)

    @property
    def is_open(self) -> bool:
        return not self._entries

    def authenticate(self, authorization: str | None) -> Principal:
        if self.is_open:
            return OPEN
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("missing bearer token: send 'Authorization: Bearer <token>'")
        presented = digest(token.strip())
        match: Entry | None = None
        for entry in self._entries:  # no early exit: same work for every token
            if hmac.compare_digest(presented, entry[1]):
                match = entry
        if match is None:
            raise AuthError("unknown token")
        owner = K.COMPAT_OWNER if match[0] == COMPAT else "t-" + presented[:16]
        return Principal(match[0], owner, match[2])


def _read_tokens_file(path: Path) -> list[Entry]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read tokens file {path}: {exc}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if fields:
            entries.append(_parse_line(fields, f"{path}:{number}"))
    return entries


def _parse_line(fields: list[str], where: str) -> Entry:
    if len(fields) < 2 or fields[0] not in ROLES:
        raise SettingsError(
            f"{where}: expected '<{'|'.join(ROLES)}> <token> [name] [queues=a,b]'"
        )
    role, secret = fields[0], fields[1]
    queues: tuple[str, ...] = ()
    for extra in fields[2:]:
        if extra.startswith("queues="):
            queues = tuple(extra.removeprefix("queues=").split(","))
            if not all(QUEUE_PATTERN.fullmatch(q) for q in queues):
                raise SettingsError(f"{where}: queues= takes queue names (wildcards * ?), "
                                    "comma-separated")  # fmt: skip
    if queues and role == ADMIN:
        raise SettingsError(f"{where}: admin tokens cannot be limited to queues")
    return role, stored_digest(secret, where), queues
