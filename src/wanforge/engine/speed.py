"""Memory and speed options set on both experts at load: fp8 weight storage and step caching.

Both are diffusers hooks, not code of ours:

- ``fp8="storage"``: ``ModelMixin.enable_layerwise_casting`` keeps each expert's weights in
  ``float8_e4m3fn`` and upcasts one layer at a time to the compute dtype for its forward (memory
  only: the matmuls still run in bf16/fp32). diffusers leaves the patch embedding, the condition
  embedder, the norms and Wan's fp32 modules (rope, time embedder, scale-shift tables) unconverted.
  FP8 *compute* (torchao float8 linears on sm89+) and the choice between the modes are in
  :mod:`wanforge.engine.fp8`.
- ``step_cache="first_block"``: diffusers' First Block Cache. Each step runs the first
  transformer block; when its residual changed by less than ``threshold`` (relative mean absolute
  difference) since the last fully computed step, the other blocks are skipped and their cached
  residual is added instead. Each expert and each CFG branch keeps its own cache; diffusers
  clears it in ``maybe_free_model_hooks`` at the end of every pipeline call, and the engine calls
  that on a failed or cancelled one too, so no generation sees another's residuals.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from diffusers.hooks.first_block_cache import FirstBlockCacheConfig
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from wanforge.engine.fp8 import FP8_CHOICES, Fp8Choice

StepCache = Literal["off", "first_block"]
STEP_CACHES: tuple[StepCache, ...] = get_args(StepCache)
# diffusers' default First Block Cache threshold
DEFAULT_STEP_CACHE_THRESHOLD = 0.05


def experts(pipe: WanImageToVideoPipeline) -> list[ModelMixin]:
    return [expert for expert in (pipe.transformer, pipe.transformer_2) if isinstance(expert, ModelMixin)]


def check_options(fp8: str, step_cache: str, threshold: float) -> tuple[Fp8Choice, StepCache]:
    """Refuse an unknown option before any weights are read (which FP8 mode runs: fp8.choose_fp8)."""
    if fp8 not in FP8_CHOICES:
        raise ValueError(f"WANFORGE_FP8 must be one of {', '.join(FP8_CHOICES)}, got {fp8!r}")
    if step_cache not in STEP_CACHES:
        raise ValueError(f"WANFORGE_STEP_CACHE must be one of {', '.join(STEP_CACHES)}, got {step_cache!r}")
    if threshold < 0:
        raise ValueError(f"WANFORGE_STEP_CACHE_THRESHOLD must be >= 0, got {threshold}")
    return fp8, step_cache  # narrowed to the Literals by the membership checks


def apply_fp8_storage(pipe: WanImageToVideoPipeline, compute_dtype: torch.dtype) -> None:
    """Store both experts' weights in float8 (e4m3), computing each layer in ``compute_dtype``."""
    for expert in experts(pipe):
        expert.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)


def apply_step_cache(pipe: WanImageToVideoPipeline, threshold: float) -> None:
    """First Block Cache on both experts (the pipeline already names each call's cache context)."""
    for expert in experts(pipe):
        expert.enable_cache(FirstBlockCacheConfig(threshold=threshold))
