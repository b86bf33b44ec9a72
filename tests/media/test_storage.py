"""LocalStorage: key safety, atomic writes, streaming limits; key and filename rules."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from wanforge.media.errors import MediaError, MediaNotFound, TooLarge
from wanforge.media.keys import MAX_FILENAME_CHARS, make_key, safe_filename, validate_key
from wanforge.media.storage import LocalStorage, Storage

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../secret",
    "uploads/../../secret",
    "uploads/tok/../../../etc/passwd",
    "uploads/./x",
    "uploads//x",
    "uploads/x/",
    "uploads\\..\\x",
    "C:/Windows/win.ini",
    "uploads/.hidden",
    "uploads/.x.abc.tmp",
    "uploads/nul\x00byte",
    "uploads/with space",
    "uploads/ü.png",
    "uploads/" + "a" * 256,
    "a/" * 600,
    "..",
    ".",
]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_local_storage_is_a_storage(storage: LocalStorage) -> None:
    assert isinstance(storage, Storage)


def test_new_key_is_unguessable_and_sanitised(storage: LocalStorage) -> None:
    key = storage.new_key("uploads", "../../My Photo (1).JPG")
    prefix, token, name = key.split("/")
    assert (prefix, name) == ("uploads", "My_Photo_1.jpg")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)
    assert len({storage.new_key("outputs", "a.mp4") for _ in range(50)}) == 50
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("photo.png", "photo.png"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\Photo.JPEG", "Photo.jpeg"),
        ("héllo wörld.png", "hello_world.png"),
        ("照片.webp", "file.webp"),
        (".bashrc", "bashrc"),
        ("...", "file"),
        ("", "file"),
        ("weird<>:|?*name.webp", "weird_name.webp"),
        ("clips.tar.gz", "clips.tar.gz"),
        ("noext", "noext"),
        ("x.not-an-ext!", "x.not-an-ext"),
        ("-_-dash.mp4", "dash.mp4"),
        ("a\x00b.png", "a_b.png"),
    ],
)
def test_safe_filename(given: str, expected: str) -> None:
    assert safe_filename(given) == expected


def test_safe_filename_caps_length_and_keeps_extension() -> None:
    name = safe_filename("a" * 500 + ".png")
    assert len(name) == MAX_FILENAME_CHARS and name.endswith("aaa.png")


def test_new_key_refuses_a_bad_prefix() -> None:
    with pytest.raises(MediaError):
        make_key("../uploads", "a.png")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_every_operation_refuses_bad_keys(storage: LocalStorage, key: str, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"do not touch")
    operations: list[Callable[[], object]] = [
        lambda: storage.path(key),
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.read_bytes(key),
        lambda: storage.exists(key),
        lambda: storage.size(key),
        lambda: storage.delete(key),
        lambda: storage.write_stream(key, [b"x"], max_bytes=10),
    ]
    for operation in operations:
        with pytest.raises(MediaError, match="storage key"):
            operation()
    assert (tmp_path / "secret").read_bytes() == b"do not touch"
    assert not storage.root.exists() or listing(storage.root) == []


def test_symlink_out_of_the_root_is_refused(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(b"outside")
    (storage.root / "uploads").mkdir(parents=True)
    (storage.root / "uploads" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(MediaError, match="points outside the storage directory"):
        storage.read_bytes("uploads/link/f.txt")
    with pytest.raises(MediaError, match="points outside"):
        storage.put_bytes("uploads/link/new.txt", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]


def test_roundtrip_size_exists_delete(storage: LocalStorage) -> None:
    key = storage.new_key("uploads", "a.bin")
    assert not storage.exists(key)
    storage.put_bytes(key, b"abc")
    assert storage.exists(key) and storage.size(key) == 3 and storage.read_bytes(key) == b"abc"
    assert storage.path(key) == (storage.root / key).resolve()
    storage.put_bytes(key, b"replaced")
    assert storage.read_bytes(key) == b"replaced"
    assert storage.delete(key) is True
    assert storage.delete(key) is False
    assert not storage.exists(key)
    assert not storage.path(key).parent.exists()  # the empty token folder was pruned
    assert (storage.root / "uploads").is_dir()


def test_missing_keys(storage: LocalStorage) -> None:
    with pytest.raises(MediaNotFound, match="does not exist") as info:
        storage.read_bytes("uploads/none/x.png")
    assert info.value.key == "uploads/none/x.png"
    with pytest.raises(MediaNotFound):
        storage.size("uploads/none/x.png")
    storage.put_bytes("uploads/t/x.png", b"x")
    with pytest.raises(MediaNotFound):
        storage.read_bytes("uploads/t")  # a folder is not a stored file


def test_copy_to_a_local_file(storage: LocalStorage, tmp_path: Path) -> None:
    storage.put_bytes("uploads/t/data.zip", b"zip bytes")
    dest = tmp_path / "local.zip"
    assert storage.copy_to("uploads/t/data.zip", dest) == 9 and dest.read_bytes() == b"zip bytes"
    with pytest.raises(MediaNotFound) as info:
        storage.copy_to("uploads/none/x.zip", tmp_path / "other.zip")
    assert info.value.key == "uploads/none/x.zip" and str(tmp_path) not in str(info.value)


def test_sweep_removes_only_old_unfinished_writes(storage: LocalStorage) -> None:
    assert storage.sweep_unfinished(60, time.time()) == 0  # nothing written yet: no root, no error
    storage.put_bytes("outputs/t/v.mp4", b"done")
    folder = storage.path("outputs/t/v.mp4").parent
    stale = folder / ".v.mp4.0123456789ab.tmp"  # as a writer killed mid-write leaves it
    live = folder / ".w.mp4.ba9876543210.tmp"  # being written right now
    lookalike = folder / ".notes.tmp"  # not a name an atomic write makes
    for path in (stale, live, lookalike):
        path.write_bytes(b"partial")
    now = time.time()
    for path in (stale, lookalike):
        os.utime(path, (now - 61, now - 61))
    assert storage.sweep_unfinished(60, now) == 1
    assert not stale.exists() and live.exists() and lookalike.exists()
    assert storage.read_bytes("outputs/t/v.mp4") == b"done"


def test_read_limit(storage: LocalStorage) -> None:
    storage.put_bytes("outputs/t/a.mp4", b"x" * 11)
    assert storage.read_bytes("outputs/t/a.mp4", max_bytes=11) == b"x" * 11
    with pytest.raises(TooLarge, match="11 bytes, over the limit of 10 bytes"):
        storage.read_bytes("outputs/t/a.mp4", max_bytes=10)


def test_open_write_is_atomic(storage: LocalStorage) -> None:
    key = "outputs/t/video.mp4"
    storage.put_bytes(key, b"old")
    with storage.open_write(key) as f:
        f.write(b"new content")
        assert storage.read_bytes(key) == b"old"  # readers see the old file until the rename
        hidden = [p.name for p in storage.path(key).parent.iterdir() if p.name.startswith(".")]
        assert len(hidden) == 1 and hidden[0].endswith(".tmp")
    assert storage.read_bytes(key) == b"new content"
    assert listing(storage.root) == [key]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(storage: LocalStorage) -> None:
    key = "outputs/t/video.mp4"
    storage.put_bytes(key, b"old")
    with pytest.raises(RuntimeError), storage.open_write(key) as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert storage.read_bytes(key) == b"old"
    assert listing(storage.root) == [key]


def test_written_files_are_readable_by_others(storage: LocalStorage) -> None:
    storage.put_bytes("outputs/t/a.mp4", b"x")
    mode = os.stat(storage.path("outputs/t/a.mp4")).st_mode & 0o777
    assert mode == 0o644 & ~_umask()


def _umask() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def test_put_file(storage: LocalStorage, tmp_path: Path) -> None:
    src = tmp_path / "render.mp4"
    src.write_bytes(b"\x00video" * 1000)
    storage.put_file("outputs/t/render.mp4", src)
    assert storage.read_bytes("outputs/t/render.mp4") == src.read_bytes()
    assert src.exists()
    with pytest.raises(MediaError, match=r"cannot read 'missing\.mp4' to store it"):
        storage.put_file("outputs/t/x.mp4", tmp_path / "missing.mp4")
    assert not storage.exists("outputs/t/x.mp4")


def _chunks(n: int, size: int) -> Iterator[bytes]:
    for i in range(n):
        yield bytes([i]) * size


def test_write_stream_within_and_over_the_limit(storage: LocalStorage) -> None:
    assert storage.write_stream("uploads/t/a.bin", _chunks(4, 256), max_bytes=1024) == 1024
    assert storage.read_bytes("uploads/t/a.bin") == b"".join(_chunks(4, 256))
    consumed: list[int] = []

    def counted() -> Iterator[bytes]:
        for i, chunk in enumerate(_chunks(100, 256)):
            consumed.append(i)
            yield chunk

    with pytest.raises(TooLarge, match="upload is larger than the limit of 1000 bytes"):
        storage.write_stream("uploads/t/b.bin", counted(), max_bytes=1000)
    assert len(consumed) == 4  # stopped at the first chunk past the limit
    assert listing(storage.root) == ["uploads/t/a.bin"]


def test_write_async_stream(storage: LocalStorage) -> None:
    async def agen(n: int) -> AsyncIterator[bytes]:
        for chunk in _chunks(n, 100):
            await asyncio.sleep(0)
            yield chunk

    assert asyncio.run(storage.write_async_stream("uploads/t/a.bin", agen(5), max_bytes=500)) == 500
    assert storage.size("uploads/t/a.bin") == 500
    with pytest.raises(TooLarge):
        asyncio.run(storage.write_async_stream("uploads/t/b.bin", agen(6), max_bytes=500))
    assert listing(storage.root) == ["uploads/t/a.bin"]


def test_async_stream_that_breaks_off_keeps_nothing(storage: LocalStorage) -> None:
    async def disconnecting() -> AsyncIterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("client went away")

    async def cancelled() -> AsyncIterator[bytes]:
        yield b"first part"
        raise asyncio.CancelledError

    with pytest.raises(ConnectionResetError):
        asyncio.run(storage.write_async_stream("uploads/t/a.bin", disconnecting(), max_bytes=500))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(storage.write_async_stream("uploads/t/a.bin", cancelled(), max_bytes=500))
    assert listing(storage.root) == []
