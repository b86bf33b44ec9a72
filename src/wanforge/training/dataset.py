"""From a training ZIP to training samples: 4k+1-frame windows at a bucket size, with captions.

For each video (in archive-name order): probe it, decode it at 16 fps once to measure motion
and find scene cuts, choose windows, then decode it a second time keeping only the frames
inside the chosen windows, resized to the clip's bucket and written to a ``.npy`` file under
``work_dir/windows``. A sample's ``frames`` is a copy-on-write memory map of that file, so memory
stays bounded by one decoded frame no matter how many clips the ZIP holds. A clip that cannot
be used is skipped with a log line; a ZIP with nothing usable is a :class:`DatasetError`.

``prepare_dataset`` owns ``work_dir/clips`` and ``work_dir/windows`` and clears them first,
so a job that runs again starts clean.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from wanforge.training.analysis import (
    MIN_WINDOW_FRAMES,
    Bucket,
    ClipAnalyzer,
    MotionStats,
    Window,
    choose_bucket,
    choose_windows,
    detect_cuts,
    make_buckets,
    resize_cover,
)
from wanforge.training.archive import (
    VIDEO_EXTENSIONS,
    ArchiveLimits,
    ExtractedArchive,
    VideoEntry,
    extract_dataset_zip,
    hidden_reason,
)
from wanforge.training.captions import apply_trigger, has_trigger, normalize_caption
from wanforge.training.errors import DatasetError
from wanforge.training.videos import (
    TARGET_FPS,
    DecodeLimits,
    VideoDecodeError,
    iter_frames_16fps,
    probe_video,
)

__all__ = [
    "ClipReport",
    "DatasetError",
    "DatasetReport",
    "PreparedDataset",
    "TrainingSample",
    "prepare_dataset",
]

_ACCEPTED = ", ".join(ext.lstrip(".") for ext in VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class TrainingSample:
    frames: np.ndarray  # (F, H, W, 3) uint8 at the bucket size, F = 4k+1; copy-on-write memory map
    caption: str  # trigger word applied
    source: str  # the video's name inside the ZIP
    start_frame: int  # first frame, in 16 fps frames from the start of the video
    motion: float  # mean frame-to-frame motion inside the window (0..255 grey levels)


@dataclass
class ClipReport:
    name: str
    used: bool = False
    reason: str = ""  # why the clip was skipped
    fps: float = 0.0
    duration_s: float = 0.0
    width: int = 0
    height: int = 0
    frames_16fps: int = 0
    scene_cuts: list[int] = field(default_factory=list)  # 16 fps frames that start a new shot
    windows: list[dict[str, Any]] = field(default_factory=list)  # {start, frames, motion}
    bucket: str = ""
    caption: str = "missing"  # "provided" | "empty" | "missing"
    trigger_added: bool = False
    motion: MotionStats = field(default_factory=lambda: MotionStats(0.0, 0.0, 0.0))


@dataclass
class DatasetReport:
    clips_found: int = 0
    clips_used: int = 0
    clips_skipped: list[dict[str, str]] = field(default_factory=list)  # {name, reason}
    windows_total: int = 0
    windows_per_clip: dict[str, int] = field(default_factory=dict)
    total_duration_s: float = 0.0
    motion: MotionStats = field(default_factory=lambda: MotionStats(0.0, 0.0, 0.0))  # over windows
    scene_cuts: int = 0
    buckets: dict[str, int] = field(default_factory=dict)  # bucket name -> windows
    captions: dict[str, int] = field(default_factory=dict)  # provided / empty / missing / trigger_added
    ignored_files: list[str] = field(default_factory=list)
    clips: list[ClipReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PreparedDataset:
    samples: list[TrainingSample]
    report: DatasetReport


def _check_args(frames_per_window: int, max_windows_per_clip: int) -> None:
    if frames_per_window < MIN_WINDOW_FRAMES or (frames_per_window - 1) % 4:
        raise ValueError(
            f"frames_per_window must be 4k+1 and at least {MIN_WINDOW_FRAMES}, got {frames_per_window}"
        )
    if max_windows_per_clip < 1:
        raise ValueError(f"max_windows_per_clip must be at least 1, got {max_windows_per_clip}")


def prepare_dataset(
    zip_path: Path,
    work_dir: Path,
    *,
    trigger_word: str,
    area: tuple[int, int] = (480, 832),
    frames_per_window: int = 81,
    max_windows_per_clip: int = 4,
    limits: ArchiveLimits | None = None,
    log: Callable[[str], None] | None = None,
    decode_limits: DecodeLimits | None = None,
    keep_clips: bool = False,
) -> PreparedDataset:
    """Extract, analyse and cut a training ZIP into samples (see the module docstring)."""
    _check_args(frames_per_window, max_windows_per_clip)
    buckets = make_buckets(area)
    emit: Callable[[str], None] = log or (lambda _line: None)
    clips_dir, windows_dir = work_dir / "clips", work_dir / "windows"
    for folder in (clips_dir, windows_dir):
        shutil.rmtree(folder, ignore_errors=True)
    windows_dir.mkdir(parents=True)

    archive = extract_dataset_zip(zip_path, clips_dir, limits or ArchiveLimits())
    for line in archive.log:
        emit(line)
    if not archive.videos:
        raise DatasetError(_nothing_found(archive))

    builder = _ClipBuilder(
        windows_dir=windows_dir,
        buckets=buckets,
        trigger_word=trigger_word,
        frames_per_window=frames_per_window,
        max_windows=max_windows_per_clip,
        decode_limits=decode_limits or DecodeLimits(),
        emit=emit,
    )
    samples: list[TrainingSample] = []
    clips: list[ClipReport] = []
    for entry in archive.videos:
        clip, clip_samples = builder.build(entry)
        clips.append(clip)
        samples.extend(clip_samples)
        if not keep_clips:
            entry.path.unlink(missing_ok=True)
    report = _summarise(clips, samples, archive)
    if not samples:
        reasons = "; ".join(f"{c.name} ({c.reason})" for c in clips)
        found = f"{len(clips)} video{'s' if len(clips) != 1 else ''} found"
        raise DatasetError(f"no usable video in the ZIP: {found}, none usable: {reasons}")
    emit(
        f"dataset: {report.clips_used} of {report.clips_found} clips used, {report.windows_total} windows, "
        f"buckets {report.buckets}"
    )
    return PreparedDataset(samples=samples, report=report)


@dataclass
class _ClipBuilder:
    windows_dir: Path
    buckets: list[Bucket]
    trigger_word: str
    frames_per_window: int
    max_windows: int
    decode_limits: DecodeLimits
    emit: Callable[[str], None]
    written: int = 0

    def build(self, entry: VideoEntry) -> tuple[ClipReport, list[TrainingSample]]:
        clip = ClipReport(name=entry.name)
        try:
            samples = self._build(entry, clip)
        except VideoDecodeError as exc:
            samples = []
            clip.reason = str(exc)
        clip.used = bool(samples)
        if not samples:
            self.emit(f"skipped {entry.name}: {clip.reason}")
        return clip, samples

    def _build(self, entry: VideoEntry, clip: ClipReport) -> list[TrainingSample]:
        info = probe_video(entry.path, self.decode_limits)
        clip.fps, clip.duration_s, clip.width, clip.height = (
            info.fps,
            info.duration_s,
            info.width,
            info.height,
        )
        analyzer = ClipAnalyzer.of(iter_frames_16fps(entry.path, limits=self.decode_limits))
        clip.frames_16fps = analyzer.frames
        if analyzer.frames >= self.decode_limits.max_frames:
            seconds = self.decode_limits.max_frames / TARGET_FPS
            self.emit(f"{entry.name}: longer than {seconds:g} s; only the first {seconds:g} s are used")
        if analyzer.frames < MIN_WINDOW_FRAMES:
            clip.reason = f"too short: {analyzer.frames} frames at 16 fps, need at least {MIN_WINDOW_FRAMES}"
            return []
        motion = analyzer.motion()
        clip.motion = MotionStats.of(motion)
        clip.scene_cuts = detect_cuts(motion)
        plan = choose_windows(
            motion, clip.scene_cuts, frames_per_window=self.frames_per_window, max_windows=self.max_windows
        )
        for start, end in plan.dropped:
            self.emit(
                f"{entry.name}: shot at 16 fps frames {start}-{end - 1} dropped "
                f"({end - start} frames, fewer than {MIN_WINDOW_FRAMES})"
            )
        if not plan.windows:
            clip.reason = f"no shot of at least {MIN_WINDOW_FRAMES} frames between scene cuts"
            return []
        bucket = choose_bucket(info.width, info.height, self.buckets)
        clip.bucket = bucket.name
        arrays = self._cut_windows(entry.path, plan.windows, bucket)
        caption = self._caption(entry, clip)
        clip.windows = [
            {"start": w.start, "frames": w.length, "motion": round(w.motion, 3)} for w in plan.windows
        ]
        self.emit(
            f"{entry.name}: {info.fps:g} fps, {info.duration_s:g} s, {info.width}x{info.height}, "
            f"{analyzer.frames} frames at 16 fps, {len(clip.scene_cuts)} scene cuts, "
            f"{len(plan.windows)} windows at {bucket.name} (starts {[w.start for w in plan.windows]})"
        )
        return [
            TrainingSample(frames=a, caption=caption, source=entry.name, start_frame=w.start, motion=w.motion)
            for w, a in zip(plan.windows, arrays, strict=True)
        ]

    def _cut_windows(self, path: Path, windows: list[Window], bucket: Bucket) -> list[np.ndarray]:
        files: list[Path] = []
        maps: list[np.memmap] = []
        for window in windows:
            files.append(self.windows_dir / f"{self.written:05d}.npy")
            self.written += 1
            shape = (window.length, bucket.height, bucket.width, 3)
            maps.append(np.lib.format.open_memmap(files[-1], mode="w+", dtype=np.uint8, shape=shape))
        end = windows[-1].start + windows[-1].length
        filled = [0] * len(windows)
        slot = 0
        for index, frame in enumerate(iter_frames_16fps(path, max_frames=end, limits=self.decode_limits)):
            while slot < len(windows) and index >= windows[slot].start + windows[slot].length:
                slot += 1
            if slot < len(windows) and index >= windows[slot].start:
                maps[slot][index - windows[slot].start] = resize_cover(frame, bucket)
                filled[slot] += 1
        for memmap in maps:
            memmap.flush()
        del maps
        if filled != [w.length for w in windows]:
            raise VideoDecodeError("the video decoded differently the second time")
        return [np.load(f, mmap_mode="c") for f in files]

    def _caption(self, entry: VideoEntry, clip: ClipReport) -> str:
        text = entry.caption_path.read_text(encoding="utf-8") if entry.caption_path else None
        clean = normalize_caption(text)
        clip.caption = "missing" if text is None else ("provided" if clean else "empty")
        clip.trigger_added = bool(self.trigger_word.strip()) and not (
            clean and has_trigger(clean, self.trigger_word)
        )
        return apply_trigger(clean, self.trigger_word)


def _summarise(
    clips: list[ClipReport], samples: list[TrainingSample], archive: ExtractedArchive
) -> DatasetReport:
    used = [c for c in clips if c.used]
    bucket_counts: Counter[str] = Counter()
    for c in used:
        bucket_counts[c.bucket] += len(c.windows)
    captions = Counter(c.caption for c in used)
    return DatasetReport(
        clips_found=len(clips),
        clips_used=len(used),
        clips_skipped=[{"name": c.name, "reason": c.reason} for c in clips if not c.used],
        windows_total=len(samples),
        windows_per_clip={c.name: len(c.windows) for c in clips},
        total_duration_s=round(sum(c.duration_s for c in used), 3),
        motion=MotionStats.of(s.motion for s in samples),
        scene_cuts=sum(len(c.scene_cuts) for c in clips),
        buckets=dict(sorted(bucket_counts.items())),
        captions={
            "provided": captions["provided"],
            "empty": captions["empty"],
            "missing": captions["missing"],
            "trigger_added": sum(c.trigger_added for c in used),
        },
        ignored_files=list(archive.ignored),
        clips=clips,
    )


def _nothing_found(archive: ExtractedArchive) -> str:
    head = "no usable video in the ZIP"
    tail = f"accepted video types are {_ACCEPTED}"
    if not archive.files:
        return f"{head}: the ZIP is empty; {tail}"
    kinds: Counter[str] = Counter()
    for name in archive.files:
        suffix = PurePosixPath(name).suffix.lower()
        kinds["hidden" if hidden_reason(name) else (suffix or "no extension")] += 1
    listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    count = len(archive.files)
    return f"{head}: found {count} file{'s' if count != 1 else ''} ({listed}); {tail}"
