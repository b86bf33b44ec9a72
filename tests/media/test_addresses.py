"""IP classification for fetches, and host resolution."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from wanforge.media.addresses import literal_address, refusal_reason, resolve_host
from wanforge.media.errors import MediaError


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.5", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT (shared)"),
        ("100.127.255.254", "carrier-grade NAT (shared)"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "private"),  # "this network"
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "private"),  # reserved for future use; Python files it under private
        ("198.18.0.1", "private"),  # benchmarking
        ("192.0.2.1", "private"),  # documentation
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "unique-local (private)"),
        ("fd12:3456:789a::1", "unique-local (private)"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),  # documentation
        ("::ffff:127.0.0.1", "loopback (embedded IPv4 127.0.0.1)"),
        ("::ffff:10.0.0.1", "private (embedded IPv4 10.0.0.1)"),
        ("::ffff:169.254.169.254", "link-local (embedded IPv4 169.254.169.254)"),
        ("2002:7f00:1::", "loopback (embedded IPv4 127.0.0.1)"),  # 6to4
        ("2002:c0a8:101::", "private (embedded IPv4 192.168.1.1)"),
        ("64:ff9b::a00:1", "private (embedded IPv4 10.0.0.1)"),  # NAT64
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, deprecated
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above CGNAT
        "172.15.255.255",  # just below 172.16/12
        "172.32.0.0",  # just above
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
        "2002:808:808::",  # 6to4 of 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    ],
)
def test_public_addresses_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_literal_address() -> None:
    assert literal_address("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("[::1]") == ipaddress.ip_address("::1")
    assert literal_address("example.com") is None
    for shorthand in ("127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1"):
        assert literal_address(shorthand) == ipaddress.ip_address("127.0.0.1"), shorthand
    assert literal_address("0") == ipaddress.ip_address("0.0.0.0")
    assert literal_address("deadbeef") is None and literal_address("1e100.net") is None


def test_resolve_literal_skips_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> object:
        raise AssertionError("no lookup for a literal address")

    monkeypatch.setattr(socket, "getaddrinfo", boom)
    assert resolve_host("10.0.0.1", 80, timeout_s=1) == [ipaddress.ip_address("10.0.0.1")]


def test_resolve_returns_unique_addresses_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        stream = socket.SOCK_STREAM
        return [
            (socket.AF_INET6, stream, 6, "", ("fe80::1%eth0", port, 0, 2)),
            (socket.AF_INET, stream, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, stream, 6, "", ("93.184.216.34", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert resolve_host("example.com", 443, timeout_s=1) == [
        ipaddress.ip_address("fe80::1"),
        ipaddress.ip_address("93.184.216.34"),
    ]


def test_resolve_failure_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(1.0)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"looking up the host name 'slow\.example' timed out"):
        resolve_host("slow.example", 80, timeout_s=0.1)
    assert time.monotonic() - start < 0.5

    def empty(*args: object, **kwargs: object) -> object:
        return []

    monkeypatch.setattr(socket, "getaddrinfo", empty)
    with pytest.raises(MediaError, match="resolves to no address"):
        resolve_host("empty.example", 80, timeout_s=1)
