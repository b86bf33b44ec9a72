"""Safe extraction of a training ZIP: videos plus same-name ``.txt`` captions.

The ZIP comes from a stranger, so every entry is checked before a byte is written, and the
limits are enforced again while the bytes stream out (the sizes in the headers are claims, not
facts). Entries whose local header and data overlap another entry's are refused: that is how a
"better zip bomb" (David Fifield, 2019) makes a few hundred kilobytes expand to gigabytes with
every header honest. And whatever the headers say, the bytes written in total may not exceed
``max_compression_ratio`` times the ZIP's own size. Nothing is ever written outside ``dest_dir``: output paths are built here
(``0000.mp4``, ``0000.txt``, ...), never taken from the archive. Any refusal is an
:class:`ArchiveError`, which the worker reports as task error 1401 (invalid parameter).
"""

from __future__ import annotations

import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from wanforge.media.errors import describe_size
from wanforge.training.errors import ArchiveError

__all__ = [
    "CAPTION_EXTENSION",
    "VIDEO_EXTENSIONS",
    "ArchiveError",
    "ArchiveLimits",
    "ExtractedArchive",
    "VideoEntry",
    "escape_name",
    "extract_dataset_zip",
    "hidden_reason",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
CAPTION_EXTENSION = ".txt"

_KIB = 1024
_MIB = 1024 * _KIB
_GIB = 1024 * _MIB
_CHUNK = 1 * _MIB
_DRIVE = re.compile(r"^[A-Za-z]:")
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
_SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what a training ZIP may expand to. Sizes are uncompressed bytes."""

    max_entries: int = 2000
    max_total_bytes: int = 4 * _GIB
    max_entry_bytes: int = 2 * _GIB
    max_caption_bytes: int = 64 * _KIB
    max_compression_ratio: float = 100.0
    # Entries that expand to less than this are never refused for their ratio (a short
    # caption of repeated words compresses well and is harmless).
    ratio_floor_bytes: int = 1 * _MIB
    max_path_depth: int = 32


@dataclass(frozen=True)
class VideoEntry:
    path: Path  # where the video was written, inside dest_dir
    caption_path: Path | None  # the caption, re-written as clean UTF-8, or None
    name: str  # the video's path inside the ZIP (normalised, "/"-separated)
    size_bytes: int = 0


@dataclass
class ExtractedArchive:
    videos: list[VideoEntry]
    ignored: list[str]  # archive names that were not extracted
    log: list[str]
    files: list[str] = field(default_factory=list)  # every file entry in the ZIP, normalised


def escape_name(text: str) -> str:
    """``text`` with every non-printable character escaped as ``\\n``, ``\\x1b``, ``\\u202e``...

    Entry names reach job logs, error messages and the dataset report; a newline or a terminal
    escape in a name must not forge a log line or recolour a terminal, nor a bidi override
    reorder what a reader sees. The same escapes as ``repr``, without its quotes.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _normalise_name(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str:
    """The entry's name as clean "/"-separated parts, non-printable characters escaped (see
    :func:`escape_name`); refuses every way out of dest_dir. Only this form is ever shown."""
    raw = info.orig_filename
    if "\x00" in raw:
        raise ArchiveError(f"unsafe path in the ZIP: {raw!r} (NUL byte in the name)")
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        raise ArchiveError(f"unsafe path in the ZIP: {raw!r} (absolute path)")
    if _DRIVE.match(name):
        raise ArchiveError(f"unsafe path in the ZIP: {raw!r} (drive letter)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"unsafe path in the ZIP: {raw!r} (parent directory '..')")
    if len(parts) > limits.max_path_depth:
        depth = limits.max_path_depth
        raise ArchiveError(f"unsafe path in the ZIP: {raw!r} (more than {depth} folders deep)")
    # backslashes were all turned into "/" above, so escaping cannot make two names equal
    return escape_name(unicodedata.normalize("NFC", "/".join(parts)))


def _check_entry(info: zipfile.ZipInfo, name: str) -> None:
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"the ZIP contains a symbolic link: '{name}'; links are not allowed")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"the ZIP entry '{name}' is encrypted; password-protected ZIPs are not supported")


def hidden_reason(name: str) -> str | None:
    """Why a (normalised) archive name is skipped without a look: macOS metadata or a dotfile."""
    parts = name.split("/")
    if "__MACOSX" in parts:
        return "macOS metadata"
    if any(p.startswith(".") for p in parts):
        return "hidden file"
    return None


def _check_overlaps(
    zip_path: Path, infos: list[zipfile.ZipInfo], names: dict[int, str], data_end: int
) -> None:
    """Refuse entries whose local header + data ranges overlap, or run into the central directory.

    ``zipfile`` reads each entry from its own header offset and never looks at the others, so
    it happily expands the same compressed bytes once per entry; this check is the one that
    sees the whole file. ``names`` maps ``id(info)`` to the name to show.
    """
    spans: list[tuple[int, int, zipfile.ZipInfo]] = []
    with open(zip_path, "rb") as f:
        for info in infos:
            f.seek(info.header_offset)
            raw = f.read(_LOCAL_HEADER.size)
            if len(raw) < _LOCAL_HEADER.size:
                raise ArchiveError(f"the ZIP entry {names[id(info)]} is corrupt (truncated local header)")
            signature, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
            if signature != _LOCAL_SIGNATURE:
                raise ArchiveError(f"the ZIP entry {names[id(info)]} is corrupt (bad local header)")
            end = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
            spans.append((info.header_offset, end, info))
    spans.sort(key=lambda span: span[0])
    previous: tuple[int, int, zipfile.ZipInfo] | None = None
    for span in spans:
        start, end, info = span
        if previous is not None and start < previous[1]:
            first, second = names[id(previous[2])], names[id(info)]
            raise ArchiveError(
                f"the ZIP entries {first} and {second} overlap (they share their data); "
                "refusing a possible ZIP bomb"
            )
        if end > data_end:
            raise ArchiveError(
                f"the ZIP entry {names[id(info)]} runs into the ZIP's central directory; "
                "refusing a possible ZIP bomb"
            )
        if previous is None or end > previous[1]:
            previous = span


class _Budget:
    """Checks the sizes the headers claim, then counts the bytes that really come out.

    The real count is what matters: it is checked before each chunk is handed on, per entry
    and in total, and in total against ``max_compression_ratio`` times ``archive_bytes`` (the
    ZIP file's real size), which no header can lie about.
    """

    def __init__(self, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.limits = limits
        self.archive_bytes = archive_bytes
        self.declared = 0
        self.total = 0

    def _check(self, name: str, size: int, compress_size: int, max_bytes: int, total: int) -> None:
        lim = self.limits
        if size > max_bytes:
            raise ArchiveError(
                f"{name} is larger than {describe_size(max_bytes)} uncompressed, the limit per file"
            )
        if size > max(lim.ratio_floor_bytes, lim.max_compression_ratio * max(compress_size, 1)):
            raise ArchiveError(
                f"{name} has a compression ratio over {lim.max_compression_ratio:g}:1; "
                "refusing a possible ZIP bomb"
            )
        if total > lim.max_total_bytes:
            raise ArchiveError(
                f"the ZIP expands to more than {describe_size(lim.max_total_bytes)}, the limit in total"
            )
        if total > max(lim.ratio_floor_bytes, lim.max_compression_ratio * self.archive_bytes):
            raise ArchiveError(
                f"the ZIP expands to more than {lim.max_compression_ratio:g} times its own size of "
                f"{describe_size(self.archive_bytes)}; refusing a possible ZIP bomb"
            )

    def precheck(self, info: zipfile.ZipInfo, name: str, max_bytes: int) -> None:
        if info.compress_type not in _SUPPORTED_METHODS:
            raise ArchiveError(f"the ZIP entry '{name}' uses an unsupported compression method")
        self.declared += info.file_size
        self._check(name, info.file_size, info.compress_size, max_bytes, self.declared)

    def stream(
        self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, max_bytes: int
    ) -> Iterator[bytes]:
        # CPython's zipfile already stops at the declared size (and then fails the CRC check);
        # counting again keeps the limits true whatever the reader does.
        written = 0
        try:
            with zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    self.total += len(chunk)
                    self._check(name, written, info.compress_size, max_bytes, self.total)
                    yield chunk
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, ValueError) as exc:
            raise ArchiveError(f"the ZIP entry '{name}' is corrupt ({exc})") from exc


def _open_zip(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise ArchiveError("data is not a ZIP archive") from exc


def extract_dataset_zip(zip_path: Path, dest_dir: Path, limits: ArchiveLimits) -> ExtractedArchive:
    """Check every entry, then stream the videos and their captions into ``dest_dir``.

    ``dest_dir`` is created if needed and should be empty: outputs are named ``0000.mp4``,
    ``0000.txt``, ... (videos in archive-name order) and never overwrite an existing file.
    """
    archive_bytes = zip_path.stat().st_size
    with _open_zip(zip_path) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise ArchiveError(f"the ZIP has {len(infos)} entries, over the limit of {limits.max_entries}")
        entries: dict[str, zipfile.ZipInfo] = {}
        shown: dict[int, str] = {}
        for info in infos:
            name = _normalise_name(info, limits)
            shown[id(info)] = f"'{name}'" if name else repr(info.orig_filename)
            _check_entry(info, name)
            if info.is_dir() or not name:
                continue
            if name in entries:
                raise ArchiveError(f"the ZIP contains '{name}' twice")
            entries[name] = info
        _check_overlaps(zip_path, infos, shown, data_end=zf.start_dir)
        return _extract(zf, entries, dest_dir, limits, archive_bytes)


def _extract(
    zf: zipfile.ZipFile,
    entries: dict[str, zipfile.ZipInfo],
    dest_dir: Path,
    limits: ArchiveLimits,
    archive_bytes: int,
) -> ExtractedArchive:
    log: list[str] = []
    ignored: list[str] = []
    visible: dict[str, zipfile.ZipInfo] = {}
    for name in sorted(entries):
        reason = hidden_reason(name)
        if reason:
            ignored.append(name)
            log.append(f"ignored {name} ({reason})")
        else:
            visible[name] = entries[name]
    videos = [n for n in visible if PurePosixPath(n).suffix.lower() in VIDEO_EXTENSIONS]
    video_set = set(videos)
    captions = {
        str(PurePosixPath(n).with_suffix("")): n
        for n in visible
        if PurePosixPath(n).suffix.lower() == CAPTION_EXTENSION
    }
    stems = (str(PurePosixPath(v).with_suffix("")) for v in videos)
    used_captions = {captions[k] for k in stems if k in captions}
    for name in visible:
        if name not in video_set and name not in used_captions:
            why = "caption without a video" if name in captions.values() else "not a video or caption"
            ignored.append(name)
            log.append(f"ignored {name} ({why})")

    budget = _Budget(limits, archive_bytes)
    for name in videos:
        budget.precheck(visible[name], name, limits.max_entry_bytes)
    for name in used_captions:
        budget.precheck(visible[name], f"caption {name}", limits.max_caption_bytes)

    # captions are small: read and check them all before writing any video
    texts = {name: _read_caption(zf, visible[name], name, budget) for name in sorted(used_captions)}
    dest_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    out: list[VideoEntry] = []
    try:
        for index, name in enumerate(videos):
            path = dest_dir / f"{index:04d}{PurePosixPath(name).suffix.lower()}"
            with path.open("xb") as dst:
                written.append(path)
                for chunk in budget.stream(zf, visible[name], name, limits.max_entry_bytes):
                    dst.write(chunk)
            size = path.stat().st_size
            caption_name = captions.get(str(PurePosixPath(name).with_suffix("")))
            caption_path = None
            if caption_name is not None:
                caption_path = dest_dir / f"{index:04d}{CAPTION_EXTENSION}"
                with caption_path.open("x", encoding="utf-8") as text_file:
                    written.append(caption_path)
                    text_file.write(texts[caption_name])
            out.append(VideoEntry(path=path, caption_path=caption_path, name=name, size_bytes=size))
            with_caption = f" with caption {caption_name}" if caption_name else " (no caption)"
            log.append(f"extracted {name} ({describe_size(size)}){with_caption}")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return ExtractedArchive(videos=out, ignored=ignored, log=log, files=sorted(entries))


def _read_caption(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: _Budget) -> str:
    data = b"".join(budget.stream(zf, info, f"caption {name}", budget.limits.max_caption_bytes))
    try:
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"caption {name} is not UTF-8 text") from exc
