"""One training job from a ZIP: dataset, then both experts' LoRAs, with the model's profiles.

The worker's trainer task and `wanforge train` both run this, so the two can never drift.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from wanforge.engine.loading import LoadedModel, exclusive_placement
from wanforge.training.dataset import DatasetReport, prepare_dataset
from wanforge.training.latents import ClipLike
from wanforge.training.preflight import (
    CUDA_OVERHEAD_BYTES,
    ModelSpec,
    available_bytes,
    check_memory,
    largest_window,
)
from wanforge.training.profiles import training_profile
from wanforge.training.run import TrainParams, TrainResult, train_lora
from wanforge.training.trainer import CancelCheck, ProgressCallback


def lora_stem(trigger_word: str) -> str:
    """A file-name-safe stem from the trigger word (`p3r5on` -> `p3r5on`, `a/b c` -> `a-b-c`)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", trigger_word).strip("-")[:40] or "lora"


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
) -> TrainedJob:
    """Analyse the ZIP into `work_dir/dataset`, train into `work_dir/train` (resumable there).

    `params` gives what the caller chooses (trigger word, steps, learning rate, rank, ...); the
    checkpoint period comes from the model's training profile and the expert boundary and
    flow shift from its sampling profile, so a LoRA is trained on the timesteps it serves.

    Before anything goes to the device, the memory preflight (`preflight.py`) estimates the peak
    and compares it with the device's free memory (CUDA) capped by `memory_limit_bytes`.

    Raises `TrainingDataError` (code 1401) for a refused or unusable ZIP, `TrainingMemoryError`
    (1403) when the estimate does not fit, `TrainingCancelled` when `should_cancel()` says so,
    `ModelLoadError` when the memory mode cannot train.
    """
    profile = loaded.profile
    plan = training_profile(profile.name)
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
    )
    with exclusive_placement(loaded):
        _preflight(loaded, dataset.samples, params, memory_limit_bytes)
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
        )
    return TrainedJob(report=report, result=result)


def _preflight(
    loaded: LoadedModel, samples: Sequence[ClipLike], params: TrainParams, limit_bytes: int | None
) -> None:
    """Refuse the job (`TrainingMemoryError`) when its estimated peak exceeds what is available."""
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
    if available is None:
        return
    check_memory(
        ModelSpec.from_transformer(loaded.pipe.transformer),
        largest_window(s.frames.shape for s in samples),
        rank=params.lora_rank,
        batch_size=params.batch_size,
        gradient_checkpointing=params.gradient_checkpointing,
        available=available,
        overhead=CUDA_OVERHEAD_BYTES if device.type == "cuda" else 0,
    )
