"""Keep server paths out of what clients read (a prediction's `error` and its job log).

Exception texts carry absolute paths (`[Errno 28] No space left on device:
'/srv/wanforge/files/outputs/...'`, a traceback's `File "/usr/lib/..."`). Each absolute path is
cut down to its last component, which still says which file without saying where the server
keeps it. A quoted path (as OSError and tracebacks write them) is cut whole, spaces included.
URLs are left alone: the `//` of `http://host/x` starts no path, and neither does a `/` right
after a word character (as in `a/b`).
"""

from __future__ import annotations

import errno
import os
import re

_QUOTED_PATH = re.compile(r"""(['"])(/[^'"\n]*)\1""")
_ABSOLUTE_PATH = re.compile(r"""(?<![\w/.~-])/(?!/)[^\s'"`,;:()<>\[\]{}|]+""")

# errors from the disk under the data directory: not the job's fault, and they may pass
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def _last_component(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or "<path>"


def scrub_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last component."""
    text = _QUOTED_PATH.sub(lambda m: m.group(1) + _last_component(m.group(2)) + m.group(1), text)
    return _ABSOLUTE_PATH.sub(lambda m: _last_component(m.group(0)), text)


def is_storage_error(exc: BaseException) -> bool:
    """An OSError of the disk itself: full, over quota, read-only, not permitted, I/O error."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_problem(exc: OSError) -> str:
    """What went wrong with the disk, in words, without the path the OSError carries."""
    return os.strerror(exc.errno) if exc.errno is not None else type(exc).__name__
