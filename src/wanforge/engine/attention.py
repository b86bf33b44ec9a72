"""The attention backend: the fastest of diffusers' attention backends this machine can run,
chosen once when the model loads and set on both experts.

diffusers dispatches every Wan attention call through ``attention_dispatch``;
``ModelMixin.set_attention_backend(name)`` points a model's attention processors at one backend.
Preference (fastest first): FlashAttention 3 (Hopper only), SageAttention (int8 Q·K: faster, not
exact), cuDNN SDPA (CUDA, sm80+), PyTorch's native SDPA (everywhere; diffusers' default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from wanforge.engine.plan import ATTENTION_PREFERENCE
from wanforge.engine.plan import TRAINABLE as TRAINABLE  # re-exported with the backend type
from wanforge.engine.plan import AttentionBackend as AttentionBackend  # re-exported: the engine names it here

# The backend names, their preference and the trainable ones are the torch-free plan's (one list):
# TRAINABLE have a backward pass. SageAttention's kernel has none (q/k/v LoRAs would silently get
# no gradient) and diffusers' FA3 op has no autograd (backward fails).
AttentionChoice = Literal["auto", "_flash_3", "sage", "_native_cudnn", "native"]
PREFERENCE: tuple[AttentionBackend, ...] = ATTENTION_PREFERENCE
SETTING = "WANFORGE_ATTENTION_BACKEND"


@dataclass(frozen=True)
class Platform:
    """What the attention backends need: a CUDA device of some compute capability, and libraries."""

    cuda: bool
    capability: tuple[int, int] | None = None
    cudnn: bool = False
    flash_attn_3: bool = False
    sageattention: bool = False
    # backends whose trial run failed on this device, with why (see `trial_run`)
    failed: tuple[tuple[str, str], ...] = ()


def _library_usable(backend: str) -> bool:
    """diffusers' own check that a backend's package is installed at a usable version (private
    in diffusers, hence guarded: a future version without it counts as 'not usable')."""
    try:
        from diffusers.models.attention_dispatch import (
            AttentionBackendName,
            _check_attention_backend_requirements,
        )

        _check_attention_backend_requirements(AttentionBackendName(backend))
    except (ImportError, RuntimeError, ValueError):
        return False
    return True


def trial_run(backend: AttentionBackend, device: torch.device) -> str | None:
    """Run ``backend`` once on a small bf16 attention (and its backward, for the backends training
    may use) on ``device``; None when it works, else why not. A library that imports is not yet a
    kernel that runs: cuDNN's SDPA, for one, refuses some head sizes, dtypes and driver versions."""
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    # (batch, sequence, heads, head_dim) as the Wan blocks call it: 40 heads of 128 in the A14B
    q = torch.randn(1, 256, 2, 128, device=device, dtype=torch.bfloat16, requires_grad=backend in TRAINABLE)
    try:
        out = dispatch_attention_fn(q, q, q, backend=AttentionBackendName(backend))
        if backend in TRAINABLE:
            out.float().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # any failure of a kernel counts: the reason is reported
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    return None


def probe(
    device: torch.device,
    library_usable: Callable[[str], bool] = _library_usable,
    trial: Callable[[AttentionBackend, torch.device], str | None] = trial_run,
) -> Platform:
    if device.type != "cuda":
        return Platform(cuda=False)
    found = Platform(
        cuda=True,
        capability=torch.cuda.get_device_capability(device),
        cudnn=bool(torch.backends.cudnn.is_available()),
        flash_attn_3=library_usable("_flash_3"),
        sageattention=library_usable("sage"),
    )
    failed = tuple(
        (name, why)
        for name in available_backends(found)
        if name != "native" and (why := trial(name, device)) is not None
    )
    return replace(found, failed=failed)


def available_backends(platform: Platform) -> list[AttentionBackend]:
    """The backends ``platform`` can run, fastest first; ``native`` always."""
    sm = platform.capability or (0, 0)
    failed = dict(platform.failed)
    usable: dict[AttentionBackend, bool] = {
        "_flash_3": platform.cuda and sm[0] == 9 and platform.flash_attn_3,
        "sage": platform.cuda and sm >= (8, 0) and platform.sageattention,
        "_native_cudnn": platform.cuda and sm >= (8, 0) and platform.cudnn,
        "native": True,
    }
    return [name for name in PREFERENCE if usable[name] and name not in failed]


def choose_backend(requested: str, platform: Platform) -> AttentionBackend:
    """``auto``: the fastest available; a named backend must be available (else ValueError)."""
    available = available_backends(platform)
    if requested == "auto":
        return available[0]
    if requested not in PREFERENCE:
        raise ValueError(f"{SETTING} must be auto or one of {', '.join(PREFERENCE)}, got {requested!r}")
    failed = dict(platform.failed)
    if requested in failed:
        raise ValueError(
            f"{SETTING}={requested} failed its trial run on this GPU ({failed[requested]}); "
            f"available: {', '.join(available)}"
        )
    if requested not in available:
        raise ValueError(
            f"{SETTING}={requested} is not available on this machine; available: {', '.join(available)}"
        )
    return requested


def training_backend(serving: AttentionBackend, platform: Platform | None = None) -> AttentionBackend:
    """The backend training runs where ``serving`` is the one generation runs: the same where it
    has a backward pass, else the first of :data:`TRAINABLE` that ``platform`` runs (cuDNN SDPA
    on the GPUs that run sage or FA3, unless its trial run failed; native SDPA always works)."""
    if serving in TRAINABLE:
        return serving
    available = available_backends(platform) if platform is not None else list(TRAINABLE)
    return next(name for name in TRAINABLE if name in available)


@contextmanager
def backend_for_training(
    pipe: WanImageToVideoPipeline, serving: AttentionBackend, trainable: AttentionBackend
) -> Iterator[AttentionBackend]:
    """Both experts on ``trainable`` (:func:`training_backend`) while training, back on ``serving`` after."""
    if trainable == serving:
        yield serving
        return
    set_backend(pipe, trainable)
    try:
        yield trainable
    finally:
        set_backend(pipe, serving)


def set_backend(pipe: WanImageToVideoPipeline, backend: AttentionBackend) -> None:
    """Point both experts' attention at ``backend`` (diffusers logs that backends are experimental)."""
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    level = diffusers_log.level
    diffusers_log.setLevel(logging.ERROR)
    try:
        for expert in (pipe.transformer, pipe.transformer_2):
            if expert is not None:
                expert.set_attention_backend(backend)
    finally:
        diffusers_log.setLevel(level)
