"""https pinning: connect to the checked IP while SNI and the certificate check use the host name.

A self-signed certificate for ``media.example`` is made with the ``openssl`` command (skipped
where it is missing); an HTTPS server on 127.0.0.1 presents it, and the name is resolved
through a fake table, never through DNS.
"""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wanforge.media import addresses
from wanforge.media.errors import MediaError
from wanforge.media.fetch import fetch_url

HOST = "media.example"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.headers.get("Host", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes are part of the test


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[int, list[str | None]]]:
    cert, key = certificate
    seen_sni: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    server = _TLSServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1], seen_sni
    server.shutdown()
    server.server_close()


@pytest.fixture
def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture(autouse=True)
def names_resolve_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: int, *, timeout_s: float) -> list[addresses.IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(addresses, "resolve_host", resolve)


def test_https_uses_the_host_name_for_sni_and_certificate(
    tls_server: tuple[int, list[str | None]], client_context: ssl.SSLContext
) -> None:
    port, seen_sni = tls_server
    got = fetch_url(
        f"https://{HOST}:{port}/x", max_bytes=1000, timeout_s=5.0, allow_private=True,
        ssl_context=client_context,
    )  # fmt: skip
    assert got.data == f"{HOST}:{port}".encode()
    assert seen_sni[-1] == HOST


def test_certificate_for_another_name_is_rejected(
    tls_server: tuple[int, list[str | None]], client_context: ssl.SSLContext
) -> None:
    port, seen_sni = tls_server
    with pytest.raises(MediaError, match=r"cannot connect to other\.example .*(certificate|hostname)"):
        fetch_url(
            f"https://other.example:{port}/x", max_bytes=1000, timeout_s=5.0, allow_private=True,
            ssl_context=client_context,
        )  # fmt: skip
    assert seen_sni[-1] == "other.example"


def test_untrusted_certificate_is_rejected(tls_server: tuple[int, list[str | None]]) -> None:
    port, _ = tls_server
    with pytest.raises(MediaError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_url(f"https://{HOST}:{port}/x", max_bytes=1000, timeout_s=5.0, allow_private=True)
