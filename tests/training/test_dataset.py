"""prepare_dataset end to end on synthetic ZIPs, and caption handling."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.training.synthetic import make_clip, make_dataset_zip, make_zip
from wanforge.training.archive import ArchiveError
from wanforge.training.captions import apply_trigger, choose_caption, has_trigger
from wanforge.training.dataset import DatasetError, PreparedDataset, TrainingSample, prepare_dataset
from wanforge.training.videos import DecodeLimits

TRIGGER = "p3r5on"


def _prepare(zip_path: Path, work: Path, lines: list[str] | None = None, **options: Any) -> PreparedDataset:
    kwargs: dict[str, Any] = {"area": (32, 48), "frames_per_window": 9, "max_windows_per_clip": 2}
    kwargs.update(options)
    log = lines.append if lines is not None else None
    return prepare_dataset(zip_path, work, trigger_word=TRIGGER, log=log, **kwargs)


def test_prepare_dataset_end_to_end(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files: dict[str, bytes | str | Path] = {
        "clips/wide.mp4": make_clip(src / "wide.mp4", frames=40, width=96, height=54, speed=1),
        "clips/wide.txt": "a white square slides to the right",
        "clips/cut.webm": make_clip(src / "cut.webm", frames=40, width=48, height=64, cut_at=20, speed=1),
        "clips/cut.txt": "P3R5ON, a scene change",
        "clips/short.gif": make_clip(src / "short.gif", fps=8, frames=3),  # 7 frames at 16 fps -> 5
        "clips/short.txt": "",
        "clips/broken.mov": b"\x00\x00\x00\x14ftypqt  " + bytes(500),
        "notes.json": "{}",
    }
    lines: list[str] = []
    result = _prepare(make_zip(tmp_path / "data.zip", files), tmp_path / "work", lines)
    by_source: dict[str, list[TrainingSample]] = {}
    for sample in result.samples:
        by_source.setdefault(sample.source, []).append(sample)
        assert sample.frames.dtype == np.uint8 and isinstance(sample.frames, np.memmap)
        assert (sample.frames.shape[0] - 1) % 4 == 0
    assert sorted(by_source) == ["clips/cut.webm", "clips/short.gif", "clips/wide.mp4"]
    assert [s.frames.shape for s in by_source["clips/wide.mp4"]] == [(9, 32, 48, 3)] * 2
    assert [s.frames.shape for s in by_source["clips/cut.webm"]] == [(9, 48, 32, 3)] * 2
    assert [s.frames.shape for s in by_source["clips/short.gif"]] == [(5, 32, 48, 3)]
    assert all(s.start_frame + 9 <= 20 or s.start_frame >= 20 for s in by_source["clips/cut.webm"])
    assert by_source["clips/wide.mp4"][0].caption == "p3r5on, a white square slides to the right"
    assert by_source["clips/cut.webm"][0].caption == "P3R5ON, a scene change"
    assert by_source["clips/short.gif"][0].caption == "p3r5on"

    report = result.report.to_dict()
    assert report["clips_found"] == 4 and report["clips_used"] == 3
    assert report["clips_skipped"][0]["name"] == "clips/broken.mov"
    assert report["windows_total"] == 5
    assert report["windows_per_clip"] == {
        "clips/broken.mov": 0,
        "clips/cut.webm": 2,
        "clips/short.gif": 1,
        "clips/wide.mp4": 2,
    }
    assert report["scene_cuts"] == 1
    assert report["buckets"] == {"32x48": 2, "48x32": 3}
    assert report["captions"] == {"provided": 2, "empty": 1, "missing": 0, "trigger_added": 2}
    assert report["ignored_files"] == ["notes.json"]
    assert report["clips"][0]["name"] == "clips/broken.mov"
    assert report["clips"][0]["reason"].startswith("not a readable video (")
    wide = next(c for c in report["clips"] if c["name"] == "clips/wide.mp4")
    assert (wide["fps"], wide["width"], wide["height"], wide["frames_16fps"], wide["bucket"]) == (
        16.0,
        96,
        54,
        40,
        "48x32",
    )
    assert 0 < report["motion"]["min"] <= report["motion"]["mean"] <= report["motion"]["max"]
    assert any(line.startswith("skipped clips/broken.mov: ") for line in lines)
    assert "ignored notes.json (not a video or caption)" in lines

    # running again on the same work dir (a retried job) starts clean and gives the same samples
    again = _prepare(make_zip(tmp_path / "data.zip", files), tmp_path / "work")
    assert [(s.source, s.start_frame) for s in again.samples] == [
        (s.source, s.start_frame) for s in result.samples
    ]
    assert len(list((tmp_path / "work" / "windows").iterdir())) == 5


def test_no_video_at_all(tmp_path: Path) -> None:
    zip_path = make_zip(
        tmp_path / "d.zip", {"a.jpg": b"x", "b.jpg": b"y", "c.txt": "z", "__MACOSX/._a.jpg": b""}
    )
    with pytest.raises(DatasetError) as info:
        _prepare(zip_path, tmp_path / "work")
    assert str(info.value) == (
        "no usable video in the ZIP: found 4 files (2 .jpg, 1 .txt, 1 hidden); "
        "accepted video types are mp4, mov, webm, mkv, avi, gif"
    )
    assert info.value.code == 1401
    with pytest.raises(DatasetError, match="the ZIP is empty"):
        _prepare(make_zip(tmp_path / "e.zip", {}), tmp_path / "work")


def test_only_unusable_videos(tmp_path: Path) -> None:
    make_clip(tmp_path / "tiny.mp4", frames=3)
    zip_path = make_zip(tmp_path / "d.zip", {"bad.mp4": b"not a video", "tiny.mp4": tmp_path / "tiny.mp4"})
    with pytest.raises(DatasetError) as info:
        _prepare(zip_path, tmp_path / "work")
    message = str(info.value)
    assert message.startswith("no usable video in the ZIP: 2 videos found, none usable: bad.mp4 (")
    assert "tiny.mp4 (too short: 3 frames at 16 fps, need at least 5)" in message


def test_archive_errors_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"hello")
    with pytest.raises(ArchiveError, match="data is not a ZIP archive"):
        _prepare(path, tmp_path / "work")


def test_helper_zip_and_arguments(tmp_path: Path) -> None:
    zip_path = make_dataset_zip(tmp_path / "ds.zip", {"a.mp4": "a caption", "b.webm": None}, frames=17)
    result = _prepare(zip_path, tmp_path / "work", frames_per_window=17, max_windows_per_clip=4)
    assert [(s.source, s.frames.shape, s.caption) for s in result.samples] == [
        ("a.mp4", (17, 32, 48, 3), "p3r5on, a caption"),
        ("b.webm", (17, 32, 48, 3), "p3r5on"),
    ]
    assert result.report.captions["missing"] == 1
    with pytest.raises(ValueError, match="4k\\+1"):
        _prepare(zip_path, tmp_path / "work", frames_per_window=16)


def test_trigger_word_rules() -> None:
    assert apply_trigger("a man walks", "p3r5on") == "p3r5on, a man walks"
    assert apply_trigger("P3R5ON walks", "p3r5on") == "P3R5ON walks"
    assert apply_trigger("a photo of p3r5on.", "p3r5on") == "a photo of p3r5on."
    assert apply_trigger("p3r5ons walk", "p3r5on") == "p3r5on, p3r5ons walk"
    assert apply_trigger("xp3r5on walks", "p3r5on") == "p3r5on, xp3r5on walks"
    assert apply_trigger(None, "p3r5on") == "p3r5on"
    assert apply_trigger("  \n ", "p3r5on") == "p3r5on"
    assert apply_trigger("two\nlines", "my style") == "my style, two lines"
    assert has_trigger("in MY  STYLE today", "my style")
    assert apply_trigger("c++ code", "c++") == "c++ code"


def test_caption_dropout() -> None:
    rng = random.Random(0)
    picks = [choose_caption("cap", rng, 0.25) for _ in range(4000)]
    assert 0.22 < picks.count("") / len(picks) < 0.28
    assert set(picks) == {"", "cap"}
    assert choose_caption("cap", np.random.default_rng(0), 0.0) == "cap"
    assert choose_caption("cap", np.random.default_rng(0), 1.0) == ""
    with pytest.raises(ValueError):
        choose_caption("cap", rng, 1.5)


def test_long_clip_is_truncated_with_a_log_line(tmp_path: Path) -> None:
    zip_path = make_dataset_zip(tmp_path / "ds.zip", {"long.mp4": "x"}, frames=40)
    lines: list[str] = []
    result = _prepare(zip_path, tmp_path / "work", lines, decode_limits=DecodeLimits(max_frames=20))
    assert result.report.clips[0].frames_16fps == 20
    assert "long.mp4: longer than 1.25 s; only the first 1.25 s are used" in lines
    assert all(s.start_frame + 9 <= 20 for s in result.samples)


def test_control_characters_never_reach_the_log_or_the_report(tmp_path: Path) -> None:
    make_clip(tmp_path / "tiny.mp4", frames=3)
    zip_path = make_zip(
        tmp_path / "d.zip",
        {
            "bad\n[worker] done.mp4": b"not a video",
            "tiny\x1b[2J.mp4": tmp_path / "tiny.mp4",
            "x\u2028.jpg": b"",
        },
    )
    lines: list[str] = []
    with pytest.raises(DatasetError) as info:
        _prepare(zip_path, tmp_path / "work", lines)
    message = str(info.value)
    assert message.startswith(
        "no usable video in the ZIP: 2 videos found, none usable: bad\\n[worker] done.mp4 ("
    )
    assert "tiny\\x1b[2J.mp4 (too short: 3 frames at 16 fps, need at least 5)" in message
    assert "ignored x\\u2028.jpg (not a video or caption)" in lines
    assert all(line.isprintable() for line in [message, *lines])
