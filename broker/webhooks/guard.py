"""The SSRF guard: which webhook URLs the broker may call.

A webhook URL is chosen by a client, and the broker (or its jobs worker) calls it from inside the
deployment's network. So: only ``http``/``https``; the host's addresses are resolved at delivery
time and every one of them must be global, not loopback, private, link-local (cloud metadata at
169.254.169.254 included), shared, multicast or reserved; the request then goes to the address
that was checked (no second lookup a DNS rebinding could change). ``INFERBOX_WEBHOOK_ALLOW`` names
networks (``10.1.0.0/16``, ``127.0.0.1``) or host names that are allowed all the same.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from .. import keys as K
from ..errors import SettingsError, WebhookRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Target:
    """A webhook URL, split, and the addresses the guard cleared for it."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # with the query string
    addresses: tuple[IPAddress, ...] = ()

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class AddressPolicy:
    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_items(cls, items: tuple[str, ...]) -> AddressPolicy:
        """``items``: networks or addresses (``10.0.0.0/8``, ``::1``) and host names."""
        networks, hosts = [], set()
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if not item.replace("-", "").replace(".", "").isalnum():
                    raise SettingsError(
                        f"INFERBOX_WEBHOOK_ALLOW: {item!r} is neither a network nor a host name"
                    ) from None
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def check_url(self, url: str) -> Target:
        """The URL split into a :class:`Target`, or WebhookRefused. Resolves nothing: a
        literal address is checked here, a name when :meth:`resolve` runs."""
        if len(url) > K.WEBHOOK_MAX_URL:
            raise WebhookRefused(f"the webhook URL is longer than {K.WEBHOOK_MAX_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise WebhookRefused(f"the webhook URL is not valid: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookRefused("a webhook URL must be http:// or https:// with a host")
        if parts.username or parts.password:
            raise WebhookRefused("a webhook URL may not carry credentials; sign-ins are not sent")
        target = _target(url, parts, port)
        if self._host_allowed(target.host):
            return target
        literal = _literal(target.host)
        if literal is not None:
            self._check_address(target.host, literal)
        elif target.host == "localhost" or target.host.endswith(".localhost"):
            raise WebhookRefused(f"webhook host {target.host} is loopback")
        return target

    def resolve(self, url: str) -> Target:
        """The checked target with the addresses to connect to. Raises WebhookRefused when any
        address the name resolves to is not allowed, or when it does not resolve."""
        target = self.check_url(url)
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise WebhookRefused(f"webhook host {target.host} does not resolve: {exc}") from None
        addresses = tuple(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                        for info in infos))  # fmt: skip
        if not self._host_allowed(target.host):
            for address in addresses:
                self._check_address(target.host, address)
        return Target(target.url, target.scheme, target.host, target.port, target.path, addresses)

    def _host_allowed(self, host: str) -> bool:
        return host in self.hosts

    def _check_address(self, host: str, address: IPAddress) -> None:
        if any(address in network for network in self.networks):
            return
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None and any(mapped in network for network in self.networks):
            return
        if not (mapped or address).is_global:
            raise WebhookRefused(
                f"webhook host {host} is {address}, a loopback, private, link-local or reserved "
                "address; allow it with INFERBOX_WEBHOOK_ALLOW if it is meant"
            )


def _target(url: str, parts: SplitResult, port: int | None) -> Target:
    host = (parts.hostname or "").lower().rstrip(".")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return Target(url, parts.scheme, host, port or default, path)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
