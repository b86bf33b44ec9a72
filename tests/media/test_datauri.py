"""data: URIs: both encodings, media types, malformed input, size limits before decoding."""

from __future__ import annotations

import base64

import pytest

from wanforge.media.datauri import is_data_uri, parse_data_uri
from wanforge.media.errors import MediaError, TooLarge

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"
B64 = base64.b64encode(PNG_HEAD).decode()


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (f"data:image/png;base64,{B64}", ("image/png", PNG_HEAD)),
        (f"DATA:IMAGE/PNG;BASE64,{B64}", ("image/png", PNG_HEAD)),
        (f"data:image/png;name=a.png;base64,{B64}", ("image/png", PNG_HEAD)),
        (f"data:image/png ; base64,{B64}", ("image/png", PNG_HEAD)),
        (f"data:;base64,{B64}", ("text/plain", PNG_HEAD)),
        ("data:,Hello%2C%20World!", ("text/plain", b"Hello, World!")),
        ("data:text/plain;charset=utf-8,%E2%9C%93", ("text/plain", "✓".encode())),
        ("data:application/octet-stream,%00%01%ff", ("application/octet-stream", b"\x00\x01\xff")),
        ("data:image%2Fsvg%2Bxml,<svg/>", ("image/svg+xml", b"<svg/>")),
    ],
)
def test_parses(uri: str, expected: tuple[str, bytes]) -> None:
    assert parse_data_uri(uri) == expected


def test_base64_tolerates_whitespace_missing_padding_urlsafe_and_percent() -> None:
    data = bytes(range(256))
    standard = base64.b64encode(data).decode()
    wrapped = "\n".join(standard[i : i + 76] for i in range(0, len(standard), 76))
    assert parse_data_uri(f"data:image/jpeg;base64,{wrapped}")[1] == data
    assert parse_data_uri(f"data:image/jpeg;base64,{standard.rstrip('=')}")[1] == data
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert parse_data_uri(f"data:image/jpeg;base64,{urlsafe}")[1] == data
    percent = standard.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert parse_data_uri(f"data:image/jpeg;base64,{percent}")[1] == data


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com/a.png", "not a data: URI"),
        ("data:image/png;base64", "no ',' between its header and its data"),
        ("data:" + "x" * 600 + ",abc", "header is longer than 512 characters"),
        ("data:image/png;base64,", "contains no data"),
        ("data:image/png,", "contains no data"),
        ("data:image/png;base64,====", "contains no data"),
        ("data:image/png;base64,abc$def", "invalid base64 data"),
        ("data:image/png;base64,abcde", "invalid base64 data: truncated"),
        ("data:image/png;base64,ümlaut", "invalid base64 data"),
        ("data:image;base64,AAAA", "invalid media type 'image'"),
        ("data:image/png/x;base64,AAAA", "invalid media type"),
    ],
)
def test_malformed(uri: str, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_data_uri(uri)


def test_size_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    big = base64.b64encode(b"x" * 1500).decode()

    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded although the size was known to be too large")

    monkeypatch.setattr("wanforge.media.datauri.base64.b64decode", no_decoding)
    with pytest.raises(TooLarge, match=r"data URI is 1500 bytes \(1.5 KiB\), over the limit of 1000 bytes"):
        parse_data_uri(f"data:image/png;base64,{big}", max_bytes=1000)
    huge = "A" * 10_000_000  # refused on length alone, without even stripping whitespace
    with pytest.raises(TooLarge, match="larger than the limit of 1000 bytes"):
        parse_data_uri(f"data:image/png;base64,{huge}", max_bytes=1000)


def test_size_limit_boundary() -> None:
    exact = base64.b64encode(b"y" * 999).decode()
    assert len(parse_data_uri(f"data:image/png;base64,{exact}", max_bytes=999)[1]) == 999
    with pytest.raises(TooLarge):
        parse_data_uri(f"data:image/png;base64,{exact}", max_bytes=998)


def test_size_limit_percent_form() -> None:
    assert parse_data_uri("data:,%41%42%43", max_bytes=3)[1] == b"ABC"
    with pytest.raises(TooLarge, match="data URI is 4 bytes"):
        parse_data_uri("data:,ABCD", max_bytes=3)
    with pytest.raises(TooLarge, match="larger than the limit"):
        parse_data_uri("data:," + "A" * 100, max_bytes=3)


def test_is_data_uri() -> None:
    assert is_data_uri("data:,x") and is_data_uri("Data:image/png;base64,AAAA")
    assert not is_data_uri("https://example.com/data:") and not is_data_uri("dat")
