"""One training job from a ZIP: dataset, then both experts' LoRAs, with the model's profiles.

The worker's trainer task and `wanforge train` both run this, so the two can never drift.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wanforge.config import Settings
from wanforge.engine.attention import backend_for_training
from wanforge.engine.loading import LoadedModel, exclusive_placement
from wanforge.training.dataset import DatasetReport, prepare_dataset
from wanforge.training.latents import ClipLike
from wanforge.training.memory import Checkpointing, MemoryOptions
from wanforge.training.preflight import (
    CUDA_OVERHEAD_BYTES,
    ModelSpec,
    Plan,
    available_bytes,
    check_memory,
    choose_gradient_checkpointing,
    largest_window,
)
from wanforge.training.profiles import TrainingProfile, training_profile
from wanforge.training.run import TrainParams, TrainResult, train_lora
from wanforge.training.trainer import CancelCheck, ProgressCallback


def lora_stem(trigger_word: str) -> str:
    """A file-name-safe stem from the trigger word (`p3r5on` -> `p3r5on`, `a/b c` -> `a-b-c`)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", trigger_word).strip("-")[:40] or "lora"


@dataclass(frozen=True)
class TrainOptions:
    """The server's training settings (docs/configuration.md, "Training memory and speed"):
    the memory options, gradient checkpointing (``auto``: decided by the preflight at job start)
    and the training window, when it is not the model's training profile's."""

    memory: MemoryOptions = field(default_factory=MemoryOptions)
    gradient_checkpointing: Checkpointing = "auto"
    frames: int | None = None
    area: tuple[int, int] | None = None
    memory_limit_bytes: int | None = None
    second_device: str = "auto"  # `auto`, `off` or a device: see `parallel_device`

    @classmethod
    def from_settings(cls, settings: Settings) -> TrainOptions:
        limit = settings.train_memory_limit_gb
        area = settings.train_area
        return cls(
            memory=MemoryOptions(
                lora_compute=settings.train_lora_compute,
                fp8_base=settings.train_fp8_base,
                offload=settings.train_offload,
            ),
            gradient_checkpointing=settings.train_gradient_checkpointing,
            frames=settings.train_frames,
            area=None if area is None else (int(area.split("x")[0]), int(area.split("x")[1])),
            memory_limit_bytes=None if limit is None else int(limit * 1024**3),
            second_device=settings.train_second_device,
        )

    def window_plan(self, profile: TrainingProfile) -> TrainingProfile:
        """The profile with this server's window, where one is set."""
        return dataclasses.replace(
            profile, frames=self.frames or profile.frames, area=self.area or profile.area
        )


def parallel_device(choice: str, primary: torch.device) -> torch.device | None:
    """Where the low-noise expert trains while the high-noise one trains on `primary`, or None
    (one after the other). `auto`: the next visible GPU when the worker sees two or more (a
    worker given two GPUs: `CUDA_VISIBLE_DEVICES=0,1`, or a Ray actor with two)."""
    if choice == "off":
        return None
    if choice == "auto":
        count = torch.cuda.device_count() if primary.type == "cuda" else 0
        if count < 2:
            return None
        return torch.device("cuda", ((primary.index or 0) + 1) % count)
    device = torch.device(choice)
    if device.type == "cuda" and primary.type == "cuda" and (device.index or 0) == (primary.index or 0):
        raise ValueError(f"WANFORGE_TRAIN_SECOND_DEVICE names the model's own device ({device})")
    visible = torch.cuda.device_count()
    if device.type == "cuda" and (device.index or 0) >= visible:
        raise ValueError(
            f"WANFORGE_TRAIN_SECOND_DEVICE names {device}, but this worker sees {visible} GPU(s)"
        )
    return device


@dataclass(frozen=True)
class TrainedJob:
    report: DatasetReport
    result: TrainResult


def train_from_zip(
    loaded: LoadedModel,
    zip_path: Path,
    work_dir: Path,
    params: TrainParams,
    *,
    output_stem: str,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    log: Callable[[str], None] | None = None,
    on_dataset: Callable[[DatasetReport], None] | None = None,
    memory_limit_bytes: int | None = None,
    options: TrainOptions | None = None,
) -> TrainedJob:
    """Analyse the ZIP into `work_dir/dataset`, train into `work_dir/train` (resumable there).

    `params` gives what the caller chooses (trigger word, steps, learning rate, rank, ...); the
    checkpoint period comes from the model's training profile and the expert boundary and
    flow shift from its sampling profile, so a LoRA is trained on the timesteps it serves.

    Before anything goes to the device, the memory preflight (`preflight.py`) estimates the peak
    and compares it with the device's free memory (CUDA) capped by `memory_limit_bytes` (or the
    options' limit). `options` (default: `TrainOptions()`) give the memory options, the window
    (instead of the profile's) and gradient checkpointing: ``on``/``off`` replace
    `params.gradient_checkpointing`, ``auto`` turns it off when the estimate without it fits.

    Raises `TrainingDataError` (code 1401) for a refused or unusable ZIP, `TrainingMemoryError`
    (1403) when the estimate does not fit, `TrainingCancelled` when `should_cancel()` says so,
    `ModelLoadError` when the memory mode cannot train.
    """
    profile = loaded.profile
    options = options or TrainOptions()
    if memory_limit_bytes is None:
        memory_limit_bytes = options.memory_limit_bytes
    plan = options.window_plan(training_profile(profile.name))
    dataset = prepare_dataset(
        zip_path,
        work_dir / "dataset",
        trigger_word=params.trigger_word,
        area=plan.area,
        frames_per_window=plan.frames,
        log=log,
    )
    report = dataset.report
    if on_dataset is not None:
        on_dataset(report)
    params = dataclasses.replace(
        params,
        checkpoint_every=plan.checkpoint_every,
        boundary=profile.boundary_ratio,
        shift=profile.flow_shift,
        base_model=params.base_model or loaded.name,
        memory=options.memory,
    )
    if options.gradient_checkpointing != "auto":
        params = dataclasses.replace(params, gradient_checkpointing=options.gradient_checkpointing == "on")
    second = parallel_device(options.second_device, loaded.device)
    # the serving backend may have no backward (sage, FA3): train on one that has
    with (
        exclusive_placement(loaded),
        backend_for_training(loaded.pipe, loaded.attention_backend, loaded.training_attention_backend),
    ):
        params = _preflight(
            loaded,
            dataset.samples,
            params,
            memory_limit_bytes,
            auto=options.gradient_checkpointing == "auto",
            second_device=second,
        )
        result = train_lora(
            loaded.pipe,
            dataset.samples,
            params,
            work_dir / "train",
            output_stem=output_stem,
            on_progress=on_progress,
            should_cancel=should_cancel,
            device=loaded.device,
            dataset_info={"clips_used": report.clips_used, "windows": report.windows_total},
            second_device=second,
        )
    return TrainedJob(report=report, result=result)


def _preflight(
    loaded: LoadedModel,
    samples: Sequence[ClipLike],
    params: TrainParams,
    limit_bytes: int | None,
    *,
    auto: bool = False,
    second_device: torch.device | None = None,
) -> TrainParams:
    """Refuse the job (`TrainingMemoryError`) when its estimated peak exceeds what is available;
    with `auto`, first choose gradient checkpointing from the estimate. Returns the params to run.
    With `second_device` (parallel experts), the low-noise expert's device is checked too, and
    the smaller of the two devices decides."""
    device = loaded.device
    modules = [m for m in loaded.pipe.components.values() if isinstance(m, torch.nn.Module)]
    # in the `gpu` memory mode the pipeline is resident now; the trainer parks it on the CPU
    resident = sum(
        t.numel() * t.element_size()
        for m in modules
        for t in (*m.parameters(), *m.buffers())
        if t.device.type == device.type == "cuda"
    )
    available = available_bytes(device, resident, limit_bytes)
    if second_device is not None:
        other = available_bytes(second_device, 0, limit_bytes)
        if other is not None:
            available = other if available is None else min(available, other)
    spec = ModelSpec.from_transformer(loaded.pipe.transformer)
    window = largest_window(s.frames.shape for s in samples)
    overhead = CUDA_OVERHEAD_BYTES if device.type == "cuda" else 0
    if auto:
        plan = Plan(window, params.lora_rank, params.batch_size, params.gradient_checkpointing, params.memory)
        checkpointing = choose_gradient_checkpointing(spec, plan, available, overhead)
        params = dataclasses.replace(params, gradient_checkpointing=checkpointing)
    if available is not None:
        check_memory(
            spec,
            window,
            rank=params.lora_rank,
            batch_size=params.batch_size,
            gradient_checkpointing=params.gradient_checkpointing,
            available=available,
            memory=params.memory,
            overhead=overhead,
        )
    return params
