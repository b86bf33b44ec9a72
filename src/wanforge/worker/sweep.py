"""Remove what a killed writer left in storage: hidden temporary files of unfinished writes.

`LocalStorage` writes each artifact to `.{name}.{12 hex}.tmp` beside its target and renames it
into place when complete (see `media/storage.py`), so a process killed mid-write leaves that file
behind and nothing else ever looks at it. A starting worker removes the ones not written to for
`stale_tmp_s`: a live writer (another worker or the API sharing the directory) keeps its file's
modification time fresh, so it is never touched.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("wanforge.worker")

TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")


def sweep_stale_writes(root: Path, older_than_s: float, now: float) -> list[Path]:
    """Delete temporary files under `root` last modified before `now - older_than_s`; return them."""
    removed: list[Path] = []
    cutoff = now - older_than_s
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not TEMP_NAME.match(name):
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
