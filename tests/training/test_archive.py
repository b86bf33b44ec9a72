"""ZIP ingest: accepted layouts, and every hostile archive refused with nothing written outside."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.training.synthetic import make_overlap_bomb, make_zip, make_zip_with_infos, patch_zip_headers
from wanforge.media.errors import describe_size
from wanforge.training.archive import ArchiveError, ArchiveLimits, extract_dataset_zip

Snapshot = Callable[[Path, Path | None], set[str]]


def _refused(tmp_path: Path, zip_path: Path, snapshot: Snapshot, limits: ArchiveLimits | None = None) -> str:
    """Extract ``zip_path`` expecting a refusal; assert nothing changed outside (or inside) dest."""
    box = tmp_path / "box"
    dest = box / "dest"
    dest.mkdir(parents=True)
    before = snapshot(tmp_path, dest)
    with pytest.raises(ArchiveError) as info:
        extract_dataset_zip(zip_path, dest, limits or ArchiveLimits())
    assert snapshot(tmp_path, dest) == before
    assert not any(p.is_file() for p in dest.rglob("*")), "a refused ZIP leaves no files behind"
    assert not Path("/tmp/evil.txt").exists()
    assert info.value.code == 1401
    return str(info.value)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.txt", "parent directory '..'"),
        ("clips/../../evil.mp4", "parent directory '..'"),
        ("..\\evil.mp4", "parent directory '..'"),
        ("/etc/x", "absolute path"),
        ("/tmp/evil.txt", "absolute path"),
        ("C:\\x", "drive letter"),
        ("c:/windows/evil.mp4", "drive letter"),
        ("\\\\server\\share\\evil.mp4", "absolute path"),
    ],
)
def test_zip_slip_is_refused(tmp_path: Path, snapshot: Snapshot, name: str, why: str) -> None:
    zip_path = make_zip(tmp_path / "slip.zip", {"ok.mp4": b"video", name: b"pwned"})
    message = _refused(tmp_path, zip_path, snapshot)
    assert message == f"unsafe path in the ZIP: {name!r} ({why})"


def test_symlink_entry_is_refused(tmp_path: Path, snapshot: Snapshot) -> None:
    link = zipfile.ZipInfo("clip.mp4")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    zip_path = make_zip_with_infos(tmp_path / "link.zip", [(link, b"/etc/passwd")])
    message = _refused(tmp_path, zip_path, snapshot)
    assert message == "the ZIP contains a symbolic link: 'clip.mp4'; links are not allowed"


def test_too_many_entries(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "many.zip", {f"f{i}.jpg": b"x" for i in range(6)})
    message = _refused(tmp_path, zip_path, snapshot, ArchiveLimits(max_entries=5))
    assert message == "the ZIP has 6 entries, over the limit of 5"


def test_too_large_in_total(tmp_path: Path, snapshot: Snapshot) -> None:
    files = {f"clip{i}.mp4": os.urandom(40_000) for i in range(3)}
    zip_path = make_zip(tmp_path / "big.zip", files)
    message = _refused(tmp_path, zip_path, snapshot, ArchiveLimits(max_total_bytes=100_000))
    assert message == "the ZIP expands to more than 100000 bytes (97.7 KiB), the limit in total"


def test_too_large_single_entry(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "one.zip", {"clip.mp4": os.urandom(20_000)})
    message = _refused(tmp_path, zip_path, snapshot, ArchiveLimits(max_entry_bytes=10_000))
    assert message == "clip.mp4 is larger than 10000 bytes (9.8 KiB) uncompressed, the limit per file"


def test_zip_bomb_ratio(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "bomb.zip", {"clip.mp4": bytes(50 * 1024 * 1024)})
    assert zip_path.stat().st_size < 200_000
    message = _refused(tmp_path, zip_path, snapshot)
    assert message == "clip.mp4 has a compression ratio over 100:1; refusing a possible ZIP bomb"


def test_lying_size_header_is_corrupt(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "lie.zip", {"clip.mp4": os.urandom(5_000)}, zipfile.ZIP_STORED)
    patch_zip_headers(zip_path, file_size=100)
    message = _refused(tmp_path, zip_path, snapshot)
    assert message.startswith("the ZIP entry 'clip.mp4' is corrupt")


def test_encrypted_entry(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "secret.zip", {"clip.mp4": b"ciphertext"})
    patch_zip_headers(zip_path, set_flags=0x1)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.infolist()[0].flag_bits & 0x1
    message = _refused(tmp_path, zip_path, snapshot)
    assert message == "the ZIP entry 'clip.mp4' is encrypted; password-protected ZIPs are not supported"


@pytest.mark.parametrize("data", [b"", b"just some text, not a zip", b"PK\x03\x04" + bytes(100)])
def test_not_a_zip(tmp_path: Path, snapshot: Snapshot, data: bytes) -> None:
    path = tmp_path / "data.zip"
    path.write_bytes(data)
    assert _refused(tmp_path, path, snapshot) == "data is not a ZIP archive"


def test_duplicate_names_after_normalisation(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "dup.zip", {"clips/a.mp4": b"one", "clips\\a.mp4": b"two"})
    assert _refused(tmp_path, zip_path, snapshot) == "the ZIP contains 'clips/a.mp4' twice"


def test_non_utf8_caption(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(
        tmp_path / "latin.zip", {"clips/a.mp4": b"v", "clips/a.txt": "café".encode("latin-1")}
    )
    assert _refused(tmp_path, zip_path, snapshot) == "caption clips/a.txt is not UTF-8 text"


def test_layout_nested_hidden_and_ignored(tmp_path: Path) -> None:
    files: dict[str, bytes | str | Path] = {
        "top.MP4": b"top video",
        "top.txt": "\ufeffa caption with a BOM\n",
        "a/b/c/deep.webm": b"deep video",
        "a/b/c/deep.txt": "deep caption",
        "a/anim.gif": b"gif",
        "a/other.txt": "an orphan caption",
        "__MACOSX/a/._anim.gif": b"resource fork",
        ".hidden.mp4": b"hidden video",
        "a/.git/config": b"[core]",
        "photo.jpg": b"jpeg",
        "meta.json": b"{}",
        "empty_dir/": b"",
    }
    dest = tmp_path / "dest"
    result = extract_dataset_zip(make_zip(tmp_path / "ok.zip", files), dest, ArchiveLimits())
    assert [v.name for v in result.videos] == ["a/anim.gif", "a/b/c/deep.webm", "top.MP4"]
    by_name = {v.name: v for v in result.videos}
    assert by_name["top.MP4"].path == dest / "0002.mp4"
    assert by_name["top.MP4"].path.read_bytes() == b"top video"
    assert by_name["a/b/c/deep.webm"].path.read_bytes() == b"deep video"
    assert by_name["a/anim.gif"].caption_path is None
    top_caption = by_name["top.MP4"].caption_path
    assert top_caption is not None and top_caption.read_text(encoding="utf-8") == "a caption with a BOM"
    assert sorted(result.ignored) == sorted(
        ["__MACOSX/a/._anim.gif", ".hidden.mp4", "a/.git/config", "a/other.txt", "photo.jpg", "meta.json"]
    )
    assert "ignored __MACOSX/a/._anim.gif (macOS metadata)" in result.log
    assert "ignored .hidden.mp4 (hidden file)" in result.log
    assert "ignored a/other.txt (caption without a video)" in result.log
    assert "ignored photo.jpg (not a video or caption)" in result.log
    assert {p.name for p in dest.iterdir()} == {"0000.gif", "0001.webm", "0001.txt", "0002.mp4", "0002.txt"}
    assert "empty_dir" not in {p.name for p in dest.iterdir()}


OVERLAP_NAMES = [f"clip{i:02d}.mp4" for i in range(30)]
KERNEL_BYTES = 1024 * 1024 - 4096  # each entry stays under the ratio floor: no per-entry ratio trips


def test_overlapping_entry_bomb_is_refused_before_writing(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_overlap_bomb(tmp_path / "overlap.zip", OVERLAP_NAMES, KERNEL_BYTES)
    assert zip_path.stat().st_size < 5_000
    with zipfile.ZipFile(zip_path) as zf:  # a well-formed ZIP as far as zipfile can tell
        assert zf.read("clip29.mp4") == bytes(KERNEL_BYTES)
        assert len(zf.read("clip00.mp4")) > KERNEL_BYTES
    message = _refused(tmp_path, zip_path, snapshot)
    assert message == (
        "the ZIP entries 'clip00.mp4' and 'clip01.mp4' overlap (they share their data); "
        "refusing a possible ZIP bomb"
    )


def test_total_bytes_written_are_bounded_by_the_zip_size(tmp_path: Path, snapshot: Snapshot) -> None:
    """Separate entries that each stay under the ratio floor still may not expand the ZIP, in
    total, past the ratio: counted on the bytes written, not the headers' claims."""
    files = {f"clip{i:02d}.mp4": bytes(KERNEL_BYTES) for i in range(8)}
    zip_path = make_zip(tmp_path / "many-small-bombs.zip", files)
    size = zip_path.stat().st_size
    assert size < 20_000
    message = _refused(tmp_path, zip_path, snapshot, ArchiveLimits(ratio_floor_bytes=2 * KERNEL_BYTES))
    assert message == (
        f"the ZIP expands to more than 100 times its own size of {describe_size(size)}; refusing a possible ZIP bomb"
    )


def test_control_characters_in_entry_names_are_escaped(tmp_path: Path) -> None:
    files: dict[str, bytes | str | Path] = {
        "clips/a\nextracted fake.mp4": b"video",
        "clips/a\nextracted fake.txt": "its caption",
        "notes\r\x1b[31m.json": b"{}",
        "clips/\u202egpj.mp4": b"video 2",
    }
    result = extract_dataset_zip(make_zip(tmp_path / "names.zip", files), tmp_path / "dest", ArchiveLimits())
    assert [v.name for v in result.videos] == ["clips/\\u202egpj.mp4", "clips/a\\nextracted fake.mp4"]
    assert result.ignored == ["notes\\r\\x1b[31m.json"]
    assert result.log == [
        "ignored notes\\r\\x1b[31m.json (not a video or caption)",
        "extracted clips/\\u202egpj.mp4 (7 bytes) (no caption)",
        "extracted clips/a\\nextracted fake.mp4 (5 bytes) with caption clips/a\\nextracted fake.txt",
    ]
    assert all(line.isprintable() for line in result.log)


def test_control_characters_in_refusal_messages_are_escaped(tmp_path: Path, snapshot: Snapshot) -> None:
    zip_path = make_zip(tmp_path / "dup.zip", {"a\nb.mp4": b"one", "a\nb.MP4/../a\nb.mp4": b"two"})
    message = _refused(tmp_path, zip_path, snapshot)
    assert message == "unsafe path in the ZIP: 'a\\nb.MP4/../a\\nb.mp4' (parent directory '..')"
    zip_path = make_zip(tmp_path / "dup2.zip", {"x\n.mp4": b"one", "x\n.mp4\\": b"", "./x\n.mp4": b"two"})
    assert _refused(tmp_path / "again", zip_path, snapshot) == "the ZIP contains 'x\\n.mp4' twice"
