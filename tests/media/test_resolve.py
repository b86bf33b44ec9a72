"""read_media: data URIs, this server's own /files/ URLs from storage, remote URLs, garbage."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from wanforge.media import resolve
from wanforge.media.errors import MediaError, MediaNotFound, TooLarge
from wanforge.media.resolve import own_file_key, read_media
from wanforge.media.storage import LocalStorage

from .conftest import BODY, LocalServer

BASES = ["http://api.example:8000", "https://WanForge.Example/prefix/"]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def stored_key(storage: LocalStorage) -> str:
    key = storage.new_key("uploads", "face.png")
    storage.put_bytes(key, b"stored bytes")
    return key


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("read_media went to the network for a local file")

    monkeypatch.setattr(resolve, "fetch_url", refuse)


def read(url: str, storage: LocalStorage, **overrides: object) -> bytes:
    options: dict[str, object] = {
        "storage": storage, "own_base_urls": BASES, "max_bytes": 1000, "timeout_s": 5.0,
        "allow_private": False, **overrides,
    }  # fmt: skip
    return read_media(url, **options)  # type: ignore[arg-type]


def test_data_uri(storage: LocalStorage) -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"inline").decode()
    assert read(uri, storage) == b"inline"
    with pytest.raises(TooLarge):
        read("data:image/png;base64," + base64.b64encode(b"x" * 2000).decode(), storage)


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(
    "template",
    [
        "http://api.example:8000/files/{key}",
        "HTTP://API.EXAMPLE:8000/files/{key}",
        "http://api.example:8000/files/{key}?download=1#frag",
        "https://wanforge.example/prefix/files/{key}",
        "https://wanforge.example:443/prefix/files/{key}",
        "/files/{key}",
        "  /files/{key}  ",
    ],
)
def test_own_urls_read_from_storage(storage: LocalStorage, stored_key: str, template: str) -> None:
    assert read(template.format(key=stored_key), storage) == b"stored bytes"


def test_percent_encoded_key(storage: LocalStorage, stored_key: str) -> None:
    encoded = stored_key.replace("/", "%2F").replace("-", "%2D")
    assert own_file_key(f"/files/{encoded}", BASES) == stored_key


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example:8001/files/k",  # other port
        "https://api.example:8000/files/k",  # other scheme
        "http://other.example:8000/files/k",  # other host
        "https://wanforge.example/files/k",  # missing the base path
        "https://wanforge.example/prefixfiles/k",
        "http://api.example:8000/file/k",
        "http://api.example:notaport/files/k",
        "//api.example:8000/files/k",
        "files/k",
    ],
)
def test_not_own_urls(url: str) -> None:
    assert own_file_key(url, BASES) is None


def test_missing_upload(storage: LocalStorage) -> None:
    with pytest.raises(
        MediaNotFound, match=r"^upload not found: image URL points to /files/uploads/x/y\.png$"
    ):
        read("http://api.example:8000/files/uploads/x/y.png", storage, label="image URL")


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(
    "url",
    [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "http://api.example:8000/files/uploads/..%2F..%2Fsecret",
        "/files//etc/passwd",
        "/files/uploads\\..\\x",
        "/files/",
    ],
)
def test_traversal_through_own_urls_refused(storage: LocalStorage, tmp_path: Path, url: str) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    with pytest.raises(MediaError, match="storage key"):
        read(url, storage)


def test_stored_file_over_the_limit(storage: LocalStorage, stored_key: str) -> None:
    with pytest.raises(TooLarge, match="12 bytes, over the limit of 5 bytes"):
        read(f"/files/{stored_key}", storage, max_bytes=5)


def test_remote_urls_are_fetched(storage: LocalStorage, http_server: LocalServer) -> None:
    assert read(http_server.url("/ok"), storage, allow_private=True) == BODY
    with pytest.raises(MediaError, match=r"^image URL resolves to a loopback address 127\.0\.0\.1"):
        read(http_server.url("/ok"), storage, label="image URL")
    with pytest.raises(MediaError, match="answered HTTP 404"):
        read(http_server.url("/files/uploads/x/y.png"), storage, allow_private=True)


def test_remote_fetch_gets_the_limits(storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class Fetched:
        data = b"remote"

    def fake_fetch(url: str, **kwargs: object) -> Fetched:
        seen.update(kwargs, url=url)
        return Fetched()

    monkeypatch.setattr(resolve, "fetch_url", fake_fetch)
    assert read("https://cdn.example/files/a.png", storage, label="'image' URL") == b"remote"
    assert seen == {
        "url": "https://cdn.example/files/a.png", "max_bytes": 1000, "timeout_s": 5.0,
        "allow_private": False, "label": "'image' URL",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "^media URL is empty$"),
        ("   \n", "^media URL is empty$"),
        ("hello", "'hello' is not a URL; expected an http\\(s\\) URL, a data: URI or /files/<key>"),
        ("example.com/a.png", "is not a URL"),
        ("ftp://example.com/a.png", "uses the unsupported scheme ftp:"),
        ("file:///etc/passwd", "uses the unsupported scheme file:"),
        ("javascript:alert(1)", "uses the unsupported scheme javascript:"),
        ("http://[::1/x", "not a valid URL"),
        ("x" * 500, r"'x{57}\.\.\.' is not a URL"),
    ],
)
def test_garbage(storage: LocalStorage, url: str, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        read(url, storage)


def test_non_string(storage: LocalStorage) -> None:
    with pytest.raises(MediaError, match="must be a string, not int"):
        read(42, storage)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LocalHost.",
        "127.1",
        "0x7f000001",
        "2130706433",
        "[::ffff:127.0.0.1]",
        "[::1]",
    ],
)
def test_own_urls_are_known_by_any_spelling_of_a_loopback_host(host: str) -> None:
    """A file uploaded at http://127.0.0.1:8000 is this server's from http://localhost:8000 too."""
    assert (
        own_file_key(f"http://{host}:8000/files/uploads/k/x.png", ["http://localhost:8000"])
        == "uploads/k/x.png"
    )
    assert own_file_key(f"http://{host}:8001/files/uploads/k/x.png", ["http://localhost:8000"]) is None
    assert own_file_key(f"http://{host}:8000/files/uploads/k/x.png", ["http://api.example:8000"]) is None
