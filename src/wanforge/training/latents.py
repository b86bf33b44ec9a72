"""Encode a training set once: VAE latents, the I2V first-frame condition and text embeddings.

Everything is computed through the pipeline's own code paths so that training sees exactly
what inference builds: the latents are normalised with the VAE's `latents_mean`/`latents_std`
as `WanImageToVideoPipeline` does, the condition comes from `pipe.prepare_latents` itself
(first frame + zero frames VAE-encoded, with the 4-channel first-frame mask in front: 20
channels), and the text from `pipe.encode_prompt` at the length `__call__` uses (512 tokens),
plus the empty caption for caption dropout. The cache lives on the CPU and can be saved in a
job's directory so that a resumed job does not encode again.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from wanforge.training.checkpoint import atomic_torch_save

MAX_SEQUENCE_LENGTH = 512  # what WanImageToVideoPipeline.__call__ encodes prompts to


class ClipLike(Protocol):
    """What the cache reads from a training sample (`training.dataset.TrainingSample`)."""

    @property
    def frames(self) -> np.ndarray: ...  # uint8 (F, H, W, 3), F = 4k + 1

    @property
    def caption(self) -> str: ...


@dataclass
class CachedClip:
    latents: torch.Tensor  # (16, f, h, w) float32, normalised like the pipeline's latents
    condition: torch.Tensor  # (20, f, h, w) float32: first-frame mask (4) + image latents (16)
    caption_index: int  # row of LatentCache.text_embeds


@dataclass
class LatentCache:
    clips: list[CachedClip]
    captions: list[str]
    text_embeds: torch.Tensor  # (num_captions, L, D) float32
    empty_embeds: torch.Tensor  # (L, D) float32: the empty caption, for caption dropout
    fingerprint: str

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        state = {
            "latents": [c.latents for c in self.clips],
            "conditions": [c.condition for c in self.clips],
            "caption_index": [c.caption_index for c in self.clips],
            "captions": self.captions,
            "text_embeds": self.text_embeds,
            "empty_embeds": self.empty_embeds,
            "fingerprint": self.fingerprint,
        }
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: Path) -> LatentCache:
        state = torch.load(path, map_location="cpu", weights_only=True)
        clips = [
            CachedClip(latents=x, condition=c, caption_index=int(i))
            for x, c, i in zip(state["latents"], state["conditions"], state["caption_index"], strict=True)
        ]
        return cls(
            clips=clips,
            captions=list(state["captions"]),
            text_embeds=state["text_embeds"],
            empty_embeds=state["empty_embeds"],
            fingerprint=str(state["fingerprint"]),
        )


def dataset_fingerprint(samples: Sequence[ClipLike], max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> str:
    """A hash of the frames and captions (and the text length): equal inputs, equal cache."""
    h = hashlib.sha256(f"wanforge-cache-v1 {max_sequence_length} {len(samples)}".encode())
    for s in samples:
        frames = np.ascontiguousarray(s.frames)
        h.update(f"{frames.shape} {frames.dtype}".encode())
        h.update(frames.tobytes())
        h.update(s.caption.encode())
    return h.hexdigest()


def check_frames(frames: np.ndarray, spatial_multiple: int = 16, temporal_scale: int = 4) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    f, h, w, _ = frames.shape
    if (f - 1) % temporal_scale != 0:
        raise ValueError(f"frame count must be {temporal_scale}k+1, got {f}")
    if h % spatial_multiple or w % spatial_multiple:
        raise ValueError(f"frame size must be a multiple of {spatial_multiple}, got {h}x{w}")


def frames_to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 (1, 3, F, H, W) in [-1, 1], as the pipeline's preprocessing."""
    x = torch.from_numpy(np.array(frames, dtype=np.uint8, copy=True)).to(torch.float32) / 255.0
    return (x * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)


def _latent_norm(pipe: WanImageToVideoPipeline, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`latents_mean` and `1 / latents_std`, shaped and typed as the pipeline builds them."""
    z = pipe.vae.config.z_dim
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1).to(device, torch.float32)
    inv_std = 1.0 / torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1).to(device, torch.float32)
    return mean, inv_std


@torch.no_grad()
def encode_video(pipe: WanImageToVideoPipeline, video: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(1, 3, F, H, W) in [-1, 1] -> normalised latents (1, 16, f, h, w), float32 on `device`."""
    vae_device = next(pipe.vae.parameters()).device
    dist = pipe.vae.encode(video.to(vae_device, pipe.vae.dtype)).latent_dist
    latents = dist.mode().to(device, torch.float32)
    mean, inv_std = _latent_norm(pipe, device)
    return (latents - mean) * inv_std


@torch.no_grad()
def image_condition(pipe: WanImageToVideoPipeline, video: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The I2V condition for a clip's first frame, built by `pipe.prepare_latents` itself."""
    _, _, num_frames, height, width = video.shape
    f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    h, w = height // pipe.vae_scale_factor_spatial, width // pipe.vae_scale_factor_spatial
    placeholder = torch.zeros(1, pipe.vae.config.z_dim, f, h, w, device=device)
    out = pipe.prepare_latents(
        video[:, :, 0].to(device),
        1,
        pipe.vae.config.z_dim,
        height,
        width,
        num_frames,
        torch.float32,
        device,
        None,
        placeholder,
    )
    return out[1]


@torch.no_grad()
def encode_captions(
    pipe: WanImageToVideoPipeline,
    captions: list[str],
    device: torch.device,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
) -> torch.Tensor:
    """(N, L, D) float32 embeddings on the CPU, from the pipeline's own `encode_prompt`."""
    rows = []
    for caption in captions:  # one at a time: the batch of a real umT5-xxl is large
        embeds, _ = pipe.encode_prompt(
            prompt=caption,
            do_classifier_free_guidance=False,
            max_sequence_length=max_sequence_length,
            device=device,
            dtype=torch.float32,
        )
        rows.append(embeds[0].cpu())
    return torch.stack(rows)


def build_cache(
    pipe: WanImageToVideoPipeline,
    samples: Sequence[ClipLike],
    device: torch.device,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    fingerprint: str | None = None,
) -> LatentCache:
    """Encode every clip and every distinct caption (plus the empty one) on `device`."""
    if not samples:
        raise ValueError("no training samples")
    if pipe.config.get("expand_timesteps", False):
        raise ValueError("expand_timesteps pipelines (Wan 2.2 TI2V 5B) are not supported")
    spatial = pipe.vae_scale_factor_spatial * 2
    for s in samples:
        check_frames(s.frames, spatial, pipe.vae_scale_factor_temporal)
    pipe.text_encoder.to(device)
    captions = sorted({s.caption for s in samples})
    text = encode_captions(pipe, [*captions, ""], device, max_sequence_length)
    pipe.vae.to(device)
    clips = []
    for s in samples:
        video = frames_to_video(s.frames)
        clips.append(
            CachedClip(
                latents=encode_video(pipe, video, device)[0].cpu(),
                condition=image_condition(pipe, video, device)[0].cpu(),
                caption_index=captions.index(s.caption),
            )
        )
    return LatentCache(
        clips=clips,
        captions=captions,
        text_embeds=text[:-1],
        empty_embeds=text[-1],
        fingerprint=fingerprint or dataset_fingerprint(samples, max_sequence_length),
    )


def free_encoders(pipe: WanImageToVideoPipeline) -> None:
    """Move the text encoder and the VAE off the accelerator and release their memory."""
    pipe.text_encoder.to("cpu")
    pipe.vae.to("cpu")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_or_build_cache(
    pipe: WanImageToVideoPipeline, samples: Sequence[ClipLike], path: Path, device: torch.device
) -> tuple[LatentCache, bool]:
    """The cache saved at `path` if it was built from these samples, else a new one (saved there).

    Returns the cache and whether it was loaded from disk.
    """
    fingerprint = dataset_fingerprint(samples)
    if path.exists():
        cached = LatentCache.load(path)
        if cached.fingerprint == fingerprint:
            free_encoders(pipe)  # a resumed run must not keep them on the device either
            return cached, True
    cache = build_cache(pipe, samples, device, fingerprint=fingerprint)
    free_encoders(pipe)
    cache.save(path)
    return cache, False
