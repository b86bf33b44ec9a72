"""Server paths are cut from client-visible text; URLs and plain words are left alone."""

from __future__ import annotations

import errno

from wanforge.worker.scrub import is_storage_error, scrub_paths


def test_paths_are_cut_to_their_last_component() -> None:
    assert scrub_paths("[Errno 28] No space left on device: '/srv/data/files/outputs/ab/.v.mp4.1f.tmp'") == (
        "[Errno 28] No space left on device: '.v.mp4.1f.tmp'"
    )
    assert scrub_paths('File "/usr/lib/python3.11/x.py", line 3') == 'File "x.py", line 3'
    assert scrub_paths("model directory /models/Wan2.2/ does not exist") == (
        "model directory Wan2.2 does not exist"
    )


def test_quoted_paths_go_whole_and_paths_after_a_colon_too() -> None:
    assert scrub_paths("[Errno 30] Read-only file system: '/srv/my data/files/a.mp4'") == (
        "[Errno 30] Read-only file system: 'a.mp4'"
    )
    assert scrub_paths('File "/home/me/my project/x.py", line 3') == 'File "x.py", line 3'
    assert scrub_paths("err:/srv/w/x.mp4") == "err:x.mp4"
    assert scrub_paths("error: /srv/w/x.mp4, retry") == "error: x.mp4, retry"


def test_urls_fractions_and_words_stay() -> None:
    text = "cannot read image: http://h:8000/files/uploads/t/a.png (and/or 3/4 done)"
    assert scrub_paths(text) == text


def test_storage_errors_are_the_disks_own() -> None:
    assert is_storage_error(OSError(errno.ENOSPC, "full"))
    assert is_storage_error(OSError(errno.EROFS, "read-only"))
    assert not is_storage_error(FileNotFoundError(errno.ENOENT, "missing"))
    assert not is_storage_error(ValueError("no"))
