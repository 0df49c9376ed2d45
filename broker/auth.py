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
constant time. A task's owner is ``t-`` and the first 16 hex digits of its token's digest, so the
same token owns the same tasks on every broker process. Every compat key owns the same tasks
(``keys.COMPAT_OWNER``), as the per-function keys of one Azure Functions app all reached the same
containers. With no tokens configured the broker is open: every caller is an admin owning
``anonymous`` (the CLI binds such a broker to loopback).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from . import keys as K
from .errors import AuthError, Forbidden, SettingsError
from .settings import Settings

CLIENT, WORKER, ADMIN, COMPAT = "client", "worker", "admin", "compat"
ROLES = (CLIENT, WORKER, ADMIN, COMPAT)
COMPAT_GRANTS = frozenset({CLIENT, WORKER})
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    role: str
    owner: str

    def require(self, *roles: str) -> None:
        """Raise Forbidden unless this principal is an admin or holds one of ``roles``."""
        if self.role == COMPAT and COMPAT_GRANTS.intersection(roles):
            return
        if self.role != ADMIN and self.role not in roles:
            raise Forbidden(f"a {self.role} token may not do this (needs {' or '.join(roles)})")

    @property
    def sees_all(self) -> bool:
        return self.role == ADMIN


OPEN = Principal(ADMIN, ANONYMOUS)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    def __init__(self, entries: list[tuple[str, str]]) -> None:
        """``entries``: (role, sha256 hex digest of the token)."""
        self._entries = entries

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable:
        entries = [
            (role, digest(token))
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
        match = None
        for role, known in self._entries:  # no early exit: same work for every token
            if hmac.compare_digest(presented, known):
                match = role
        if match is None:
            raise AuthError("unknown token")
        return Principal(match, K.COMPAT_OWNER if match == COMPAT else "t-" + presented[:16])


def _read_tokens_file(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read tokens file {path}: {exc}") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 2 or fields[0] not in ROLES:
            raise SettingsError(f"{path}:{number}: expected '<{'|'.join(ROLES)}> <token>'")
        role, secret = fields[0], fields[1]
        if secret.startswith("sha256:"):
            entries.append((role, secret.removeprefix("sha256:").lower()))
        else:
            entries.append((role, digest(secret)))
    return entries
