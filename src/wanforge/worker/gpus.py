"""Which GPU each embedded worker process gets, found without importing torch.

The API process never imports torch (it would take seconds and gigabytes), so the GPUs are read
from `CUDA_VISIBLE_DEVICES` when the operator set it, else from `nvidia-smi -L`.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)  # MIG lines are indented: only whole GPUs count


def nvidia_smi_list(timeout_s: float = 10.0) -> str | None:
    """The output of `nvidia-smi -L`; None where there is no NVIDIA driver (or it fails)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_gpu_list(text: str) -> list[str]:
    """GPU indices from `nvidia-smi -L` ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)")."""
    return _GPU_LINE.findall(text)


def visible_gpus(env: Mapping[str, str], probe: Callable[[], str | None] | None = None) -> list[str]:
    """The GPU ids workers may be pinned to: the entries of `CUDA_VISIBLE_DEVICES` when it is set
    (an empty value or -1 hides every GPU), else every GPU `probe` (nvidia-smi) lists."""
    if VISIBLE_ENV in env:
        ids = [part.strip() for part in env[VISIBLE_ENV].split(",") if part.strip()]
        # CUDA stops at the first invalid entry; -1 is the usual way to hide all GPUs
        return ids[: ids.index("-1")] if "-1" in ids else ids
    listing = (probe or nvidia_smi_list)()
    return parse_gpu_list(listing) if listing else []


def worker_gpus(gpus: list[str], workers: int) -> list[str | None]:
    """The `CUDA_VISIBLE_DEVICES` of each of `workers` processes: with several GPUs, worker i gets
    GPU i (round robin when there are more workers than GPUs); with one GPU or none, no pinning
    (None: the worker sees what the server sees)."""
    if len(gpus) < 2:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]
