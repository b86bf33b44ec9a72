"""Per-expert training checkpoints in a job's directory, written atomically.

One file per expert (`{job_dir}/checkpoints/{expert}.pt`), replaced in place: a temporary
file is written, flushed and fsynced, then renamed over the old one, so a process killed at
any moment leaves either the previous checkpoint or the new one, never a torn file. A
checkpoint holds everything the next step depends on: the LoRA weights, the optimizer state,
the expert's random generator state, the step, and the parameters it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from wanforge.media.atomic import atomic_write
from wanforge.training.timesteps import Expert

CHECKPOINT_VERSION = 1


def atomic_torch_save(obj: object, path: Path) -> None:
    """`torch.save` to `path` atomically (see `wanforge.media.atomic`)."""
    with atomic_write(path) as f:
        torch.save(obj, f)


@dataclass
class ExpertCheckpoint:
    expert: Expert
    step: int
    total_steps: int
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng_state: torch.Tensor
    run_key: dict[str, Any]  # the parameters that must match for a resume to be valid
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps


def checkpoint_path(job_dir: Path, expert: Expert) -> Path:
    return job_dir / "checkpoints" / f"{expert}.pt"


def save_checkpoint(path: Path, checkpoint: ExpertCheckpoint) -> None:
    state = {f.name: getattr(checkpoint, f.name) for f in fields(checkpoint)}  # no deep copy
    atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: Path) -> ExpertCheckpoint | None:
    """The checkpoint at `path`, or None when there is none yet."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    version = state.pop("version", None)
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {version!r}")
    return ExpertCheckpoint(**state)


def check_run_key(checkpoint: ExpertCheckpoint, run_key: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint made with other parameters (it would silently mix runs)."""
    if checkpoint.run_key != run_key:
        changed = sorted(
            k
            for k in run_key.keys() | checkpoint.run_key.keys()
            if run_key.get(k) != checkpoint.run_key.get(k)
        )
        raise ValueError(
            f"{path} was made with different parameters ({', '.join(changed)}); use a new job directory"
        )
