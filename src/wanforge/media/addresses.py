"""Which IP addresses a server-side fetch may connect to, and host name resolution.

A media URL comes from whoever calls the API, so fetching it must not become a way to reach
the server's own network (SSRF): cloud metadata at 169.254.169.254, services on loopback, the
private LAN, carrier-grade NAT space. :func:`refusal_reason` classifies one address;
addresses embedded in IPv6 forms (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64
``64:ff9b::/96``) are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading

from wanforge.media.errors import MediaError

__all__ = ["IPAddress", "literal_address", "refusal_reason", "resolve_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


def refusal_reason(ip: IPAddress) -> str | None:
    """Why a fetch must not connect to ``ip`` (``"loopback"``, ``"private"``, ...), or None.

    None means the address is publicly routable. The reason is an adjective for messages such
    as "resolves to a loopback address 127.0.0.1".
    """
    if isinstance(ip, ipaddress.IPv6Address):
        return _refusal_reason_v6(ip)
    return _refusal_reason_v4(ip)


# checks shared by both families, in order: (adjective, ipaddress property)
_SPECIAL = (
    ("unspecified", "is_unspecified"),
    ("loopback", "is_loopback"),
    ("link-local", "is_link_local"),
    ("multicast", "is_multicast"),
)
_GENERAL = (("private", "is_private"), ("reserved", "is_reserved"))


def _flagged(ip: IPAddress, checks: tuple[tuple[str, str], ...]) -> str | None:
    return next((reason for reason, flag in checks if getattr(ip, flag)), None)


def _refusal_reason_v4(ip: ipaddress.IPv4Address) -> str | None:
    if reason := _flagged(ip, _SPECIAL):
        return reason
    if ip == _BROADCAST:
        return "broadcast"
    if ip in _CGNAT:
        return "carrier-grade NAT (shared)"
    return _flagged(ip, _GENERAL) or (None if ip.is_global else "non-public")


def _refusal_reason_v6(ip: ipaddress.IPv6Address) -> str | None:
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and ip in _NAT64:
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None:
        inner = _refusal_reason_v4(embedded)
        return None if inner is None else f"{inner} (embedded IPv4 {embedded})"
    if reason := _flagged(ip, _SPECIAL):
        return reason
    if ip.is_site_local:
        return "site-local"
    if ip in _UNIQUE_LOCAL:
        return "unique-local (private)"
    return _flagged(ip, _GENERAL) or (None if ip.is_global else "non-public")


_NUMERIC_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is a literal (``[::1]`` brackets allowed), else None.

    Besides dotted quads this takes the shorthand IPv4 forms the C resolver accepts and would
    connect to (``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``0``), so a check on
    the literal judges the address a connection would really reach.
    """
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _NUMERIC_IPV4.fullmatch(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def resolve_host(host: str, port: int, *, timeout_s: float) -> list[IPAddress]:
    """All addresses ``host`` resolves to for a TCP connection, in the resolver's order.

    A literal address is returned as is. The lookup runs in a daemon thread so that a hung
    resolver cannot outlast ``timeout_s``. Failure or timeout -> :class:`MediaError`.
    """
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    box: dict[str, object] = {}

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    worker = threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True)
    worker.start()
    worker.join(max(timeout_s, 0.0))
    if worker.is_alive():
        raise MediaError(f"looking up the host name {host!r} timed out")
    if "error" in box:
        raise MediaError(f"cannot resolve the host name {host!r}: {box['error']}")
    infos = box.get("infos")
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos if isinstance(infos, list) else []:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise MediaError(f"the host name {host!r} resolves to no address")
    return addresses
