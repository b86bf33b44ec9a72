"""The one atomic write: the target appears whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from wanforge.media.atomic import AtomicFile, atomic_write, is_temp_name


def test_the_file_appears_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    with atomic_write(target) as f:
        f.write(b"new")
        assert not target.exists()
        [tmp] = list(target.parent.iterdir())
        assert is_temp_name(tmp.name)
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_a_failed_block_keeps_the_old_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_an_abandoned_write_is_recognisable_by_its_name(tmp_path: Path) -> None:
    pending = AtomicFile.begin(tmp_path / "out.bin")  # a writer killed before commit
    pending.file.write(b"x")
    pending.file.close()
    assert is_temp_name(pending.tmp.name)
    assert not is_temp_name("out.bin") and not is_temp_name(".hidden")
    assert not (tmp_path / "out.bin").exists()
