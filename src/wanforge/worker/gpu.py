"""The worker's GPU memory, as it reports it to the store for /metrics (the API never imports torch)."""

from __future__ import annotations

import sys


def gpu_memory() -> dict[str, int] | None:
    """Bytes allocated and reserved by this process's CUDA caching allocator, and the device's
    total and free memory; None when this process has not put anything on a CUDA device (no GPU,
    a CPU model, or torch not loaded at all: nothing is imported or initialised to find out)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    device = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(device)
    return {
        "allocated": int(torch.cuda.memory_allocated(device)),
        "reserved": int(torch.cuda.memory_reserved(device)),
        "free": int(free),
        "total": int(total),
    }
