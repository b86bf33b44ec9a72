"""ComfyUI's "fp8 scaled" checkpoints, dequantized at load.

Written by hand because no library reads them: diffusers' single-file loader and its
quantizers know GGUF, bitsandbytes, torchao and the like, but not ComfyUI's format, which exists
only in ComfyUI's own loader (``comfy/model_detection.py``, ``comfy/ops.py`` ``scaled_fp8_ops``).

The format: a ``scaled_fp8`` marker tensor (its dtype names the float8 type; float32 means
e4m3fn), and for each float8 layer a ``<layer>.scale_weight`` (one float32 value, or one per
output row) such that the real weight is ``weight.float() * scale_weight``; an optional
``<layer>.scale_input`` serves fp8 matmuls and is not needed here. Layers without a scale are
plain 16/32-bit tensors. The result is an ordinary state dict in ``compute_dtype``, so the rest
of loading, LoRAs and the fp8 storage mode of the engine work as for any other checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wanforge.engine.wan_keys import COMFY_FP8_INPUT_SCALE, COMFY_FP8_MARKER, COMFY_FP8_SCALE

FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def is_fp8_scaled(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the tensors need :func:`dequantize_fp8_scaled`: ComfyUI's marker (with or without
    prefix), a ``scale_weight``, or any float8 tensor."""
    return any(
        key.rsplit(".", 1)[-1] in (COMFY_FP8_MARKER, COMFY_FP8_SCALE) or value.dtype in FLOAT8
        for key, value in state_dict.items()
    )


def dequantize_fp8_scaled(
    state_dict: Mapping[str, torch.Tensor], compute_dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The plain state dict: each float8 tensor times its scale, in ``compute_dtype`` (computed in
    float32); the marker and the scales dropped; every other tensor as it is (the loader casts it
    to its parameter's dtype). A float8 tensor without a scale counts as scale 1, as in ComfyUI
    (whose scaled layers start with a scale of one), which also reads plain ``_fp8_e4m3fn`` files."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in (COMFY_FP8_MARKER, COMFY_FP8_SCALE, COMFY_FP8_INPUT_SCALE):
            continue
        if value.dtype not in FLOAT8:
            out[key] = value
            continue
        real = value.float()
        scale = (
            state_dict.get(key.removesuffix("weight") + COMFY_FP8_SCALE) if key.endswith("weight") else None
        )
        if scale is not None:
            factor = scale.float()
            if factor.dim() == 1 and factor.numel() == value.shape[0] and value.dim() > 1:
                factor = factor.view(-1, *([1] * (value.dim() - 1)))  # one scale per output row
            real = real * factor
        out[key] = real.to(compute_dtype)
    return out
