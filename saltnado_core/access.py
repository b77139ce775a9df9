"""Who may use the API from where: ``authorized_ips`` and ``api_acl``, as rest_cherrypy has them.

The client address is the socket's peer, which the binding hands the connection
(:attr:`saltnado_core.http.Request.client`); no header (``X-Forwarded-For``,
``Remote-Addr``) is believed — rest_cherrypy's ``Remote-Addr`` is set by CherryPy
from the socket, so this is the same address. Behind a proxy every request
comes from the proxy's address.

Entries are addresses (``10.0.0.5``, ``::1``) or, beyond rest_cherrypy's exact
string match, networks (``10.0.0.0/8``); ``'*'`` is any address. An IPv4 client
seen on a dual-stack socket as ``::ffff:10.0.0.5`` matches ``10.0.0.5``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from .blocks import ConfigError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
ANY = "*"


@dataclass(frozen=True, slots=True)
class Addresses:
    """A list of addresses and networks, or any address (``'*'``); written back as given."""

    entries: tuple[str, ...]
    networks: tuple[Network, ...]
    any: bool = False

    @classmethod
    def parse(cls, value: Any, where: str) -> Addresses:
        """``value`` (a list of strings) → Addresses; :class:`ConfigError` naming ``where``."""
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list of IP addresses or networks, got {value!r}")
        networks = []
        for entry in value:
            if entry == ANY:
                continue
            try:
                networks.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError:
                raise ConfigError(f"{where} holds {entry!r}, which is not an IP address or network") from None
        return cls(tuple(str(entry) for entry in value), tuple(networks), ANY in value)

    def allows(self, client: str | None) -> bool:
        if self.any:
            return True
        address = _address(client)
        return address is not None and any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class ApiAcl:
    """``api_acl: {users: {name | '*': [addresses]}}``: who may log in from where.

    rest_cherrypy's ``salt_api_acl_tool``: a user listed by name may log in only from
    their addresses; a user not listed, only from ``'*'``'s, or not at all when
    ``'*'`` is not listed. No ``users`` (or an empty one): everyone, from anywhere.
    """

    users: tuple[tuple[str, Addresses], ...]

    @classmethod
    def parse(cls, value: Any, where: str) -> ApiAcl | None:
        if value is None:
            return None
        users = value.get("users") if isinstance(value, Mapping) else None
        if not isinstance(value, Mapping) or not isinstance(users or {}, Mapping) or set(value) - {"users"}:
            raise ConfigError(f"{where} must be {{users: {{<name> or '*': [<addresses>]}}}}, got {value!r}")
        return cls(tuple((str(name), Addresses.parse(ips, f"{where} users: {name}")) for name, ips in (users or {}).items()))

    def allows(self, username: str, client: str | None) -> bool:
        if not self.users:
            return True
        table = dict(self.users)
        addresses = table.get(username, table.get(ANY))
        return addresses is not None and addresses.allows(client)

    def as_config(self) -> dict[str, Any]:
        return {"users": {name: list(addresses.entries) for name, addresses in self.users}}


def parse_addresses(value: Any, where: str) -> Addresses | None:
    """``authorized_ips``: None (absent or empty) lets every client in."""
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    return Addresses.parse(value, where)


def _address(client: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])  # a scoped fe80::1%eth0
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def entries(addresses: Addresses | None) -> list[str] | None:
    return list(addresses.entries) if addresses is not None else None


__all__ = ["Addresses", "ApiAcl", "entries", "parse_addresses"]
