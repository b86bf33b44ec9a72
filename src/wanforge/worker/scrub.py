"""Keep server paths out of what clients read (a prediction's `error` and its job log).

Exception texts carry absolute paths (`[Errno 28] No space left on device:
'/srv/wanforge/files/outputs/...'`, a traceback's `File "/usr/lib/..."`). Each absolute path is
cut down to its last component, which still says which file without saying where the server
keeps it. URLs are left alone: a path right after `:` or `/` (as in `http://host/x`) or a word
character (as in `a/b`) is not taken for one.
"""

from __future__ import annotations

import errno
import os
import re

_ABSOLUTE_PATH = re.compile(r"""(?<![\w:/.~-])/[^\s'"`,;:()<>\[\]{}|]+""")

# errors from the disk under the data directory: not the job's fault, and they may pass
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def scrub_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last component."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "<path>", text)


def is_storage_error(exc: BaseException) -> bool:
    """An OSError of the disk itself: full, over quota, read-only, not permitted, I/O error."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_problem(exc: OSError) -> str:
    """What went wrong with the disk, in words, without the path the OSError carries."""
    return os.strerror(exc.errno) if exc.errno is not None else type(exc).__name__
