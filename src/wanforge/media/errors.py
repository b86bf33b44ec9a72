"""Errors raised by the media layer.

Every failure to read, fetch, decode or store user media is a :class:`MediaError` whose message
is written for the person who sent the request: it says what was wrong and, where there is one,
which setting changes the behaviour. The worker turns a ``MediaError`` into the WaveSpeed task
error code 1402 ("media access failed") and puts ``str(error)`` in the prediction's ``error``
field, so messages must never contain secrets or server-side paths.

The subclasses let callers that care tell the cases apart (the upload route answers 413 for
:class:`TooLarge`, 404 for :class:`MediaNotFound`) while everything else can catch the base
class.
"""

from __future__ import annotations

import errno

__all__ = ["MediaError", "MediaNotFound", "Refused", "StorageUnavailable", "TooLarge", "describe_size"]


class MediaError(Exception):
    """Media could not be read, fetched, decoded or stored; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TooLarge(MediaError):
    """The media is larger than the limit that applies to it."""

    def __init__(self, what: str, limit: int, size: int | None = None, *, hint: str = "") -> None:
        if size is None:
            message = f"{what} is larger than the limit of {describe_size(limit)}"
        else:
            message = f"{what} is {describe_size(size)}, over the limit of {describe_size(limit)}"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.limit = limit
        self.size = size


class Refused(MediaError):
    """The URL can never be used: it is invalid, or the address rules refuse it. Unlike a timeout,
    a refused connection or a 5xx, trying again cannot help."""


class MediaNotFound(MediaError):
    """A storage key (an upload or an output) does not exist."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class StorageUnavailable(MediaError, OSError):
    """The storage itself failed (an object store unreachable, timing out or answering 5xx).

    Also an ``OSError`` with ``errno.EIO``, so a worker treats it as it treats a failing disk: the
    job is put back and tried again later (``WANFORGE_STORAGE_RETRIES``), not failed as bad media.
    """

    def __init__(self, message: str) -> None:
        OSError.__init__(self, errno.EIO, message)
        self.message = message


def describe_size(n: int) -> str:
    """A byte count for humans: ``1536`` -> ``"1536 bytes (1.5 KiB)"``."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{n} bytes ({value:.1f} {unit})"
