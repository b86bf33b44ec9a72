"""Per-expert training checkpoints in a job's directory, written atomically.

One file per expert (`{job_dir}/checkpoints/{expert}.pt`), replaced in place: a temporary
file is written, flushed and fsynced, then renamed over the old one, so a process killed at
any moment leaves either the previous checkpoint or the new one, never a torn file. A
checkpoint holds everything the next step depends on: the LoRA weights, the optimizer state,
the expert's random generator state, the step, and the parameters it was trained with.

`StoredCheckpoints` mirrors these files in the shared storage, so that a job taken over by a
worker on another node (another data directory) resumes from the last checkpoint too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from wanforge.media.atomic import atomic_write
from wanforge.media.errors import MediaError, MediaNotFound
from wanforge.media.keys import job_scratch_key
from wanforge.media.lora_files import sha256_file
from wanforge.media.storage import Storage
from wanforge.training.timesteps import EXPERTS, Expert

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


def checkpoint_step(path: Path) -> int:
    """The step of the checkpoint at `path`, read without loading its tensors (memory-mapped)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path.name}: unsupported checkpoint version {state.get('version')!r}")
    return int(state["step"])


Stamp = tuple[int, int, int]  # (inode, mtime ns, size): a checkpoint file replaced since changes it


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class StoredCheckpoints:
    """A job's checkpoints mirrored in the shared storage, so another node resumes from them.

    Each expert's checkpoint goes to the fixed key `jobs/{job id}/checkpoints/{expert}-{data}.pt`,
    `{data}` being the first 16 hex digits of the training ZIP's sha256: an attempt that fetched
    other bytes from the same URL (what it serves changed) finds no checkpoint of another dataset,
    and the trainer's run-key check refuses one made with other parameters.

    `push_changed` uploads each checkpoint file the trainer replaced since the last call (cheap to
    call after every step: one `stat` per expert); `pull` brings a stored checkpoint into the
    local training directory when it is further along than the local one (or there is none).
    Uploads are atomic (`Storage.put_file`), so a reader sees the previous checkpoint or the new
    one; a download goes to a hidden file renamed into place.
    """

    def __init__(self, storage: Storage, job_id: str, data_sha256: str, train_dir: Path) -> None:
        self.storage = storage
        self.job_id = job_id
        self.data_sha256 = data_sha256
        self.train_dir = train_dir
        self._stamps: dict[Expert, Stamp | None] = {}

    @staticmethod
    def key(job_id: str, data_sha256: str, expert: Expert) -> str:
        return job_scratch_key(job_id, "checkpoints", f"{expert}-{data_sha256[:16]}.pt")

    @classmethod
    def key_for(cls, job_id: str, zip_path: Path, expert: Expert) -> str:
        """The key of `expert`'s checkpoint of the job `job_id` training on the ZIP at `zip_path`."""
        return cls.key(job_id, sha256_file(zip_path), expert)

    @property
    def keys(self) -> list[str]:
        return [self.key(self.job_id, self.data_sha256, e) for e in EXPERTS]

    def pull(self) -> dict[Expert, int]:
        """Bring each stored checkpoint here that is further along than the local one; return
        {expert: step} of those brought. A storage outage raises `StorageUnavailable`."""
        pulled: dict[Expert, int] = {}
        for expert in EXPERTS:
            local = checkpoint_path(self.train_dir, expert)
            local.parent.mkdir(parents=True, exist_ok=True)
            part = local.with_name(f".{local.name}.pulled")
            try:
                try:
                    self.storage.copy_to(self.key(self.job_id, self.data_sha256, expert), part)
                except MediaNotFound:
                    continue
                step = checkpoint_step(part)
                if local.exists() and checkpoint_step(local) >= step:
                    continue  # this node got further before it stopped: push_changed stores it
                os.replace(part, local)
            finally:
                part.unlink(missing_ok=True)
            self._stamps[expert] = _stamp(local)
            pulled[expert] = step
        return pulled

    def push_changed(self, warn: Callable[[str], None] | None = None) -> list[Expert]:
        """Upload each checkpoint replaced since the last push or pull; return those uploaded.

        A failed upload does not stop training: `warn` hears of it, the local checkpoint stays,
        and the next checkpoint is uploaded as usual."""
        pushed: list[Expert] = []
        for expert in EXPERTS:
            local = checkpoint_path(self.train_dir, expert)
            stamp = _stamp(local)
            if stamp is None or self._stamps.get(expert) == stamp:
                continue
            self._stamps[expert] = stamp
            try:
                self.storage.put_file(self.key(self.job_id, self.data_sha256, expert), local)
            except MediaError as exc:
                if warn is not None:
                    warn(f"the {expert} checkpoint was not stored (training goes on): {exc}")
                continue
            pushed.append(expert)
        return pushed

    def delete(self) -> None:
        """Remove the stored checkpoints (the job has ended)."""
        for key in self.keys:
            self.storage.delete(key)
