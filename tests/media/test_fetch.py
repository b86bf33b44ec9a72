"""fetch_url against a real local HTTP server: address checks, pinning, limits, redirects."""

from __future__ import annotations

import ipaddress
import re
import socket
import time
import urllib.parse

import pytest

from wanforge.media import addresses, fetch
from wanforge.media.errors import MediaError, TooLarge
from wanforge.media.fetch import FetchedMedia, fetch_url

from .conftest import BODY, LocalServer

LIMITS = {"max_bytes": 1_000_000, "timeout_s": 5.0}


def get(url: str, *, allow_private: bool = True, **kwargs: object) -> FetchedMedia:
    options: dict[str, object] = {**LIMITS, **kwargs}
    return fetch_url(url, allow_private=allow_private, **options)  # type: ignore[arg-type]


def redirect_to(server: LocalServer, target: str, code: int = 302) -> str:
    return server.url("/redirect?" + urllib.parse.urlencode({"to": target, "code": code}))


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Treat 127.0.0.1 as a public address so that the test server stands in for the internet."""
    real = addresses.refusal_reason
    server_ip = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(addresses, "refusal_reason", lambda ip: None if ip == server_ip else real(ip))


class FakeDNS:
    """Invented host names; the real resolver must never be asked about them."""

    def __init__(self) -> None:
        self.table: dict[str, list[str]] = {}
        self.calls: list[str] = []

    def __setitem__(self, host: str, ips: list[str]) -> None:
        self.table[host] = ips


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS()
    real_resolve = addresses.resolve_host
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host: str, port: int, *, timeout_s: float) -> list[addresses.IPAddress]:
        if host in dns.table:
            dns.calls.append(host)
            return [ipaddress.ip_address(a) for a in dns.table[host]]
        return real_resolve(host, port, timeout_s=timeout_s)

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        assert host not in dns.table, f"{host} was resolved again, outside the checked lookup"
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(addresses, "resolve_host", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return dns


def test_fetch_returns_body_type_and_final_url(http_server: LocalServer) -> None:
    got = get(http_server.url("/ok"))
    assert got == FetchedMedia(BODY, "image/png", http_server.url("/ok"))


def test_loopback_refused_unless_allowed(http_server: LocalServer) -> None:
    with pytest.raises(MediaError) as info:
        get(http_server.url("/ok"), allow_private=False)
    assert str(info.value) == (
        "media URL resolves to a loopback address 127.0.0.1; set WANFORGE_ALLOW_PRIVATE_URLS=1 to allow it"
    )
    assert get(http_server.url("/ok"), allow_private=True).data == BODY


def test_refusal_happens_before_any_connection(http_server: LocalServer) -> None:
    before = len(http_server.requests)
    with pytest.raises(MediaError, match="loopback"):
        get(http_server.url("/ok?first"), allow_private=False)
    assert len(http_server.requests) == before


@pytest.mark.parametrize("url", ["http://10.0.0.5/x", "http://[::1]/x", "http://169.254.169.254/latest/"])
def test_private_literals_refused_with_the_label(url: str) -> None:
    with pytest.raises(
        MediaError, match=r"^image URL resolves to a .* address .*WANFORGE_ALLOW_PRIVATE_URLS"
    ):
        fetch_url(url, allow_private=False, label="image URL", **LIMITS)  # type: ignore[arg-type]


def test_connects_to_the_checked_address_with_the_original_host(
    http_server: LocalServer, fake_dns: FakeDNS
) -> None:
    fake_dns["media.example"] = ["127.0.0.1"]
    got = get(f"http://media.example:{http_server.port}/echo-host")
    assert got.data == f"media.example:{http_server.port}".encode()
    assert got.final_url == f"http://media.example:{http_server.port}/echo-host"
    assert fake_dns.calls == ["media.example"]  # one lookup, then the pinned IP is used


def test_any_refused_address_among_several_refuses_the_host(fake_dns: FakeDNS) -> None:
    fake_dns["mixed.example"] = ["93.184.216.34", "10.1.2.3"]
    with pytest.raises(MediaError, match=r"private address 10\.1\.2\.3"):
        get("http://mixed.example/x", allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/a.png", "file:///etc/passwd", "gopher://example.com/", "example.com/a.png"],
)
def test_non_http_schemes_refused(url: str) -> None:
    with pytest.raises(MediaError, match="must be an http or https URL"):
        get(url)


def test_invalid_and_hostless_urls_refused() -> None:
    with pytest.raises(MediaError, match="has no host name"):
        get("http:///path")
    with pytest.raises(MediaError, match="not a valid URL"):
        get("http://[::1/x")


def test_content_length_over_the_cap_refused_up_front(http_server: LocalServer) -> None:
    with pytest.raises(TooLarge) as info:
        get(http_server.url("/sized?n=2000"), max_bytes=1000)
    assert "2000 bytes" in str(info.value) and "WANFORGE_MAX_DOWNLOAD_BYTES" in str(info.value)
    start = time.monotonic()
    with pytest.raises(TooLarge, match="1000000000000 bytes"):
        get(http_server.url("/huge-length"), max_bytes=1000)
    assert time.monotonic() - start < 1.0  # did not wait for a body that never comes


def test_exact_size_is_allowed(http_server: LocalServer) -> None:
    assert len(get(http_server.url("/sized?n=1000"), max_bytes=1000).data) == 1000


@pytest.mark.parametrize("path", ["/chunked?chunks=5", "/close-delimited?n=5000"])
def test_body_without_length_is_cut_at_the_cap(http_server: LocalServer, path: str) -> None:
    with pytest.raises(TooLarge, match="larger than the limit of 4000 bytes"):
        get(http_server.url(path), max_bytes=4000)
    assert len(get(http_server.url(path), max_bytes=5000).data) == 5000


def test_slow_response_times_out(http_server: LocalServer) -> None:
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"timed out after 0\.3 s; WANFORGE_FETCH_TIMEOUT_S"):
        get(http_server.url("/slow?s=2"), timeout_s=0.3)
    assert time.monotonic() - start < 1.5


def test_timeout_bounds_the_whole_download_not_each_read(http_server: LocalServer) -> None:
    start = time.monotonic()  # 100 bytes, one every 50 ms: no single read is slow
    with pytest.raises(MediaError, match="timed out"):
        get(http_server.url("/drip"), timeout_s=0.5)
    assert time.monotonic() - start < 1.5


def test_non_2xx_names_the_status(http_server: LocalServer) -> None:
    with pytest.raises(MediaError, match=r"^media URL answered HTTP 404 Not Found$"):
        get(http_server.url("/status/404"))
    with pytest.raises(MediaError, match="HTTP 500"):
        get(http_server.url("/status/500"))


def test_redirects_are_followed_and_reported(http_server: LocalServer) -> None:
    got = get(redirect_to(http_server, "/ok", 301))
    assert got.data == BODY and got.final_url == http_server.url("/ok")
    assert get(redirect_to(http_server, http_server.url("/ok"), 308)).data == BODY


@pytest.mark.usefixtures("loopback_is_public")
@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://10.0.0.5/secret", "private address 10.0.0.5"),
        ("http://[::1]:9/", "loopback address ::1"),
        ("http://metadata.example/latest", "link-local address 169.254.169.254"),
        ("http://[::ffff:192.168.0.1]/", "private (embedded IPv4 192.168.0.1) address"),
    ],
)
def test_redirect_to_a_refused_address_is_refused(
    http_server: LocalServer, fake_dns: FakeDNS, target: str, reason: str
) -> None:
    fake_dns["metadata.example"] = ["169.254.169.254"]
    assert get(http_server.url("/ok"), allow_private=False).data == BODY  # the start is allowed
    with pytest.raises(MediaError, match=r"\(redirected to .*\) resolves to an? " + re.escape(reason)):
        get(redirect_to(http_server, target), allow_private=False)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"])
def test_redirect_to_another_scheme_is_refused(http_server: LocalServer, target: str) -> None:
    scheme = target.split(":", 1)[0]
    with pytest.raises(MediaError, match=rf"redirected to a {scheme}: URL; only http and https"):
        get(redirect_to(http_server, target))


def test_redirect_loop_is_capped(http_server: LocalServer) -> None:
    before = len(http_server.requests)
    with pytest.raises(MediaError, match="redirected more than 3 times"):
        get(http_server.url("/loop"), max_redirects=3)
    assert len(http_server.requests) - before == 4  # the first request and three redirects
    with pytest.raises(MediaError, match="redirected more than 0 times"):
        get(redirect_to(http_server, "/ok"), max_redirects=0)


def test_redirect_without_location(http_server: LocalServer) -> None:
    with pytest.raises(MediaError, match="HTTP 302 without a Location header"):
        get(http_server.url("/no-location"))


def test_connection_refused_is_a_media_error() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MediaError, match=f"cannot connect to 127.0.0.1 port {port}"):
        get(f"http://127.0.0.1:{port}/x")


def test_unresolvable_host_is_a_media_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(MediaError, match=r"cannot resolve the host name 'nowhere\.invalid'"):
        get("http://nowhere.invalid/x")


def test_module_constants_name_the_settings() -> None:
    assert fetch.ALLOW_PRIVATE_SETTING == "WANFORGE_ALLOW_PRIVATE_URLS"
    assert fetch.MAX_BYTES_SETTING == "WANFORGE_MAX_DOWNLOAD_BYTES"
    assert fetch.TIMEOUT_SETTING == "WANFORGE_FETCH_TIMEOUT_S"
