"""Fetching media from a URL given by an API caller, safely.

The rules, applied to the first request and to every redirect hop alike:

- only ``http`` and ``https``;
- the host is resolved once, and every address it resolves to must be public (see
  :mod:`wanforge.media.addresses`) unless ``allow_private`` is set;
- the connection goes to the address that was checked, not to the name: the URL is rewritten
  to the IP, the ``Host`` header carries the original host, and for https the TLS SNI and the
  certificate check use the original host name (httpcore's ``sni_hostname`` extension). A DNS
  answer that changes between the check and the connection (DNS rebinding) therefore has no
  effect;
- redirects are followed by hand, at most ``max_redirects`` of them;
- a ``Content-Length`` over ``max_bytes`` is refused before the body is read, and the body is
  streamed and cut off as soon as it passes ``max_bytes`` (with or without a length);
  :func:`fetch_to_file` writes each chunk to disk as it arrives, so memory stays bounded by
  one chunk whatever the size; ``limit_setting`` is the setting a size error names;
- ``timeout_s`` bounds the whole fetch, DNS, redirects and body included (checked between
  operations, each of which may take at most the time that is left);
- proxies from the environment are ignored (``trust_env=False``): a proxy would connect to
  names we did not check.

Every failure is a :class:`MediaError` whose message says what happened.
"""

from __future__ import annotations

import io
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from wanforge.media import addresses
from wanforge.media.errors import MediaError, Refused, TooLarge

__all__ = ["FetchedFile", "FetchedMedia", "check_post_url", "fetch_to_file", "fetch_url", "post_url"]

ALLOW_PRIVATE_SETTING = "WANFORGE_ALLOW_PRIVATE_URLS"
MAX_BYTES_SETTING = "WANFORGE_MAX_DOWNLOAD_BYTES"
TIMEOUT_SETTING = "WANFORGE_FETCH_TIMEOUT_S"
WEBHOOK_TIMEOUT_SETTING = "WANFORGE_WEBHOOK_TIMEOUT_S"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_URL_CHARS = 8192
MAX_CONNECT_ATTEMPTS = 4
USER_AGENT = "wanforge-media-fetch/1"


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    """The body of a successful fetch, its MIME type (lower-case, no parameters) and the URL
    it finally came from after redirects."""

    data: bytes
    content_type: str | None
    final_url: str


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A body written to disk by :func:`fetch_to_file`: its size, MIME type and final URL."""

    size: int
    content_type: str | None
    final_url: str


@dataclass(frozen=True, slots=True)
class _Limits:
    label: str
    max_bytes: int
    timeout_s: float
    deadline: float
    allow_private: bool
    limit_setting: str = MAX_BYTES_SETTING
    timeout_setting: str = TIMEOUT_SETTING

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left

    def timed_out(self) -> MediaError:
        return MediaError(
            f"{self.label} timed out after {self.timeout_s:g} s; {self.timeout_setting} sets the limit"
        )


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    max_redirects: int = 5,
    label: str = "media URL",
    ssl_context: ssl.SSLContext | None = None,
    limit_setting: str = MAX_BYTES_SETTING,
) -> FetchedMedia:
    """GET ``url`` under the rules in this module's docstring and return its body.

    ``label`` names the URL in error messages (e.g. ``"image URL"``); ``ssl_context`` replaces
    the default certificate store (a private CA, or a test). For a body that may be large, use
    :func:`fetch_to_file`.
    """
    limits = _Limits(label, max_bytes, timeout_s, time.monotonic() + timeout_s, allow_private, limit_setting)
    body = io.BytesIO()
    _, content_type, final_url = _fetch(url, body.write, limits, max_redirects, ssl_context)
    return FetchedMedia(body.getvalue(), content_type, final_url)


def fetch_to_file(
    url: str,
    target: Path,
    *,
    max_bytes: int,
    timeout_s: float,
    allow_private: bool,
    max_redirects: int = 5,
    label: str = "media URL",
    ssl_context: ssl.SSLContext | None = None,
    limit_setting: str = MAX_BYTES_SETTING,
    timeout_setting: str = TIMEOUT_SETTING,
) -> FetchedFile:
    """GET ``url`` like :func:`fetch_url`, writing the body to ``target`` chunk by chunk.

    ``target`` is created or truncated; on any failure it is removed, so a refused or broken
    download leaves nothing behind.
    """
    limits = _Limits(
        label,
        max_bytes,
        timeout_s,
        time.monotonic() + timeout_s,
        allow_private,
        limit_setting,
        timeout_setting,
    )
    try:
        with open(target, "wb") as out:
            size, content_type, final_url = _fetch(url, out.write, limits, max_redirects, ssl_context)
    except OSError as exc:  # the local file (disk full, read-only): say so without its path
        target.unlink(missing_ok=True)
        raise MediaError(f"cannot store the file from the {label}: {exc.strerror or exc}") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return FetchedFile(size, content_type, final_url)


def _fetch(
    url: str,
    sink: Callable[[bytes], object],
    limits: _Limits,
    max_redirects: int,
    ssl_context: ssl.SSLContext | None,
) -> tuple[int, str | None, str]:
    """Follow redirects to the final answer and pour its body into ``sink``.

    Returns the body's size, its MIME type and the final URL.
    """
    label = limits.label
    current = _check_url(url, label, redirected=False)
    verify: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
    with httpx.Client(verify=verify, trust_env=False, follow_redirects=False) as client:
        redirects = 0
        while True:
            client.cookies.clear()
            response = _send_pinned(client, current, limits, redirected=redirects > 0)
            try:
                status = response.status_code
                if status in REDIRECT_STATUSES:
                    redirects += 1
                    if redirects > max_redirects:
                        raise MediaError(f"{label} redirected more than {max_redirects} times")
                    location = response.headers.get("location")
                    if not location:
                        raise MediaError(f"{label} answered HTTP {status} without a Location header")
                    try:
                        next_url = current.join(location)
                    except httpx.InvalidURL as exc:
                        raise MediaError(f"{label} redirected to an invalid URL: {exc}") from exc
                    current = _check_url(next_url, label, redirected=True)
                    continue
                if not 200 <= status < 300:
                    raise MediaError(f"{label} answered HTTP {status} {response.reason_phrase}".rstrip())
                size = _read_body(response, limits, sink)
                return size, _mime(response.headers.get("content-type")), str(current)
            finally:
                response.close()


# what a host may be once IDNA-encoded: a DNS name (letters, digits, '-', '_', '.') or an IPv6 literal
_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]+")


def _check_url(url: str | httpx.URL, label: str, *, redirected: bool) -> httpx.URL:
    if isinstance(url, str):
        if len(url) > MAX_URL_CHARS:
            raise MediaError(f"{label} is longer than {MAX_URL_CHARS} characters")
        try:
            url = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise MediaError(f"{label} is not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https"):
        if redirected:
            raise MediaError(f"{label} redirected to a {url.scheme}: URL; only http and https are allowed")
        shown = f"not {url.scheme}:" if url.scheme else "and this one has no scheme"
        raise MediaError(f"{label} must be an http or https URL, {shown}")
    if not url.host:
        raise MediaError(f"{label} has no host name")
    if not _HOST_CHARS.fullmatch(url.raw_host.decode("ascii", "replace")):
        raise MediaError(f"{label} has an invalid host name")
    if url.port is not None and not 0 < url.port < 65536:
        raise MediaError(f"{label} has an invalid port {url.port}")
    return url


def check_post_url(url: str, *, allow_private: bool, label: str = "webhook URL") -> httpx.URL:
    """``url`` parsed, or :class:`Refused` if no POST to it could ever be made: not a valid
    URL, not http(s), no host, over :data:`MAX_URL_CHARS`, or a literal IP address the rules
    refuse. (A host name is judged when it is resolved, at each POST.)"""
    try:
        target = _check_url(url, label, redirected=False)
    except MediaError as exc:
        raise Refused(exc.message) from exc
    literal = addresses.literal_address(target.host)
    if literal is not None and not allow_private:
        reason = addresses.refusal_reason(literal)
        if reason is not None:
            raise _address_refused(label, literal, reason)
    return target


def _address_refused(where: str, ip: addresses.IPAddress, reason: str) -> Refused:
    article = "an" if reason[0] in "aeiou" else "a"
    return Refused(
        f"{where} resolves to {article} {reason} address {ip}; set {ALLOW_PRIVATE_SETTING}=1 to allow it"
    )


def post_url(
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    timeout_s: float,
    allow_private: bool,
    label: str = "webhook URL",
) -> int:
    """POST ``content`` to ``url`` under the same address rules as :func:`fetch_url` (no
    redirects are followed: a redirect is an answer like any other). Returns the HTTP status.

    :class:`Refused` (a :class:`MediaError`) means trying again cannot help; any other
    ``MediaError`` (DNS, connection, timeout) may pass."""
    limits = _Limits(
        label,
        0,
        timeout_s,
        time.monotonic() + timeout_s,
        allow_private,
        timeout_setting=WEBHOOK_TIMEOUT_SETTING,
    )
    target = check_post_url(url, allow_private=allow_private, label=label)
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        response = _send_pinned(
            client, target, limits, redirected=False, method="POST", content=content, extra_headers=headers
        )
        response.close()
        return response.status_code


def _send_pinned(
    client: httpx.Client,
    url: httpx.URL,
    limits: _Limits,
    *,
    redirected: bool,
    method: str = "GET",
    content: bytes | None = None,
    extra_headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Resolve and check ``url``'s host, then send the request to a checked address."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    ips = addresses.resolve_host(host, port, timeout_s=limits.remaining())
    if not limits.allow_private:
        for ip in ips:
            reason = addresses.refusal_reason(ip)
            if reason is not None:
                where = f"{limits.label} (redirected to {host})" if redirected else limits.label
                raise _address_refused(where, ip, reason)
    headers = {
        **(extra_headers or {}),
        "Host": url.netloc.decode("ascii"),
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
    }
    extensions = {}
    if url.scheme == "https" and addresses.literal_address(host) is None:
        extensions["sni_hostname"] = host
    failure: Exception | None = None
    for ip in ips[:MAX_CONNECT_ATTEMPTS]:
        request = client.build_request(
            method,
            url.copy_with(host=str(ip)),
            headers=headers,
            content=content,
            timeout=httpx.Timeout(limits.remaining()),
            extensions=extensions,
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as exc:  # refused, unreachable, TLS failure: try the next address
            failure = exc
        except httpx.TimeoutException as exc:
            raise limits.timed_out() from exc
        except httpx.HTTPError as exc:
            raise MediaError(f"{limits.label} request to {host} failed: {exc}") from exc
    raise MediaError(f"{limits.label}: cannot connect to {host} port {port}: {failure}") from failure


def _read_body(response: httpx.Response, limits: _Limits, sink: Callable[[bytes], object]) -> int:
    too_large_hint = f"{limits.limit_setting} sets the limit"
    what = f"the file at the {limits.label}"
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise TooLarge(what, limits.max_bytes, int(declared), hint=too_large_hint)
    total = 0
    try:
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limits.max_bytes:
                raise TooLarge(what, limits.max_bytes, hint=too_large_hint)
            sink(chunk)
            limits.remaining()
    except httpx.TimeoutException as exc:
        raise limits.timed_out() from exc
    except httpx.HTTPError as exc:
        raise MediaError(f"{limits.label} download failed: {exc}") from exc
    return total


def _mime(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None
