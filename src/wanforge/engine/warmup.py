"""Compile warm-up at worker start: the compiled experts meet the served sizes before a user does.

Under ``WANFORGE_COMPILE=regional`` dynamo compiles a block graph the first time it sees a shape,
and again at the second shape (then it marks the changed dimensions dynamic, so a third shape does
not compile again; engine/compile.py). Without a warm-up the first request at each size pays for
that compile (minutes at full size). ``warm_up`` runs one forward of each expert at the generation
shape of each resolution in ``WANFORGE_COMPILE_WARMUP`` (a 16:9 image, 5 s), at the worker's own
memory mode, slots and attention backend, before the worker claims its first job. Text and image
inputs are zeros: the graphs depend on shapes and dtypes, not values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from wanforge.engine.loading import LoadedModel
from wanforge.engine.sizing import generation_size
from wanforge.engine.speed import experts

LATENT_STRIDE = (4, 8, 8)  # the Wan VAE: frames, height, width
WARMUP_DURATION_S = 5


@dataclass(frozen=True)
class WarmupShape:
    resolution: str  # the preset the model denoises at
    frames: int
    height: int
    width: int

    def latent(self) -> tuple[int, int, int]:
        (ft, fh, fw) = LATENT_STRIDE
        return ((self.frames - 1) // ft + 1, self.height // fh, self.width // fw)


def warmup_shapes(loaded: LoadedModel, resolutions: Sequence[str]) -> list[WarmupShape]:
    """The distinct generation shapes of ``resolutions`` (1080p upscaled from 720p is 720p's)."""
    profile = loaded.profile
    shapes: dict[tuple[int, int, int], WarmupShape] = {}
    for resolution in resolutions:
        denoised = profile.generation_resolution(resolution)
        width, height = generation_size(1920, 1080, denoised, area=profile.generation_area)
        frames = profile.num_frames(WARMUP_DURATION_S)
        shapes.setdefault((frames, height, width), WarmupShape(denoised, frames, height, width))
    return list(shapes.values())


def warm_up(
    loaded: LoadedModel, resolutions: Sequence[str], clock: Callable[[], float] = time.monotonic
) -> dict[str, float]:
    """One no-grad forward of each expert per shape; returns the seconds each shape took."""
    seconds: dict[str, float] = {}
    for shape in warmup_shapes(loaded, resolutions):
        started = clock()
        for expert in experts(loaded.pipe):
            config = expert.config
            latent = torch.zeros(
                1, int(config["in_channels"]), *shape.latent(), device=loaded.device, dtype=loaded.dtype
            )
            text = torch.zeros(
                1,
                loaded.profile.max_sequence_length,
                int(config["text_dim"]),
                device=loaded.device,
                dtype=loaded.dtype,
            )
            timestep = torch.tensor([999], device=loaded.device)
            with torch.no_grad():
                expert(hidden_states=latent, timestep=timestep, encoder_hidden_states=text, return_dict=False)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        seconds[f"{shape.resolution} {shape.width}x{shape.height}x{shape.frames}"] = clock() - started
    return seconds
