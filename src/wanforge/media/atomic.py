"""Atomic file writes: the one way wanforge puts a file in place.

Bytes go to a hidden temporary file next to the target (``.{name}.{random}.tmp``), which is
flushed, fsynced and renamed over the target only once complete; the directory is fsynced
after the rename. A reader never sees half a file, and a process killed at any moment leaves
either the old file or the new one. A killed writer can leave its temporary file behind: its
name starts with ``.`` and ends with :data:`TEMP_SUFFIX`, so a sweep can find it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("wanforge.media")

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is the temporary name of an unfinished atomic write."""
    return _TEMP_NAME.match(name) is not None


def sweep_unfinished(root: Path, older_than_s: float, now: float) -> list[Path]:
    """Delete the temporary files of atomic writes under ``root`` that were last written before
    ``now - older_than_s`` (their writer was killed); return them. A live writer keeps its file's
    modification time fresh, so it is never touched."""
    removed: list[Path] = []
    cutoff = now - older_than_s
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not is_temp_name(name):
                continue
            path = Path(folder) / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # its writer finished or gave up meanwhile
                continue
            except OSError:
                log.warning("cannot remove stale temporary file %s", path, exc_info=True)
    return removed


@dataclass(slots=True)
class AtomicFile:
    """A temporary file on its way to ``target``: commit() renames it there, abort() drops it."""

    target: Path
    tmp: Path
    file: BinaryIO

    @classmethod
    def begin(cls, target: Path) -> AtomicFile:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        return cls(target, tmp, os.fdopen(fd, "wb"))

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.target)
        _fsync_dir(self.target.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """Open ``target`` for writing; it appears (or is replaced) only if the block succeeds."""
    pending = AtomicFile.begin(target)
    try:
        yield pending.file
        pending.commit()
    except BaseException:
        pending.abort()
        raise


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; a platform that cannot open directories skips it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
