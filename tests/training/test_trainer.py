"""The dual-expert LoRA trainer on tiny random-weight models: caching, learning, resume, cancel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from tests.training.synthetic import Clip
from wanforge.engine.demo import DemoComponents, build_demo_components, transformer_config
from wanforge.training.checkpoint import checkpoint_path, load_checkpoint
from wanforge.training.latents import build_cache, frames_to_video
from wanforge.training.lora import lora_modules
from wanforge.training.run import TrainParams, as_pipeline, train_lora
from wanforge.training.timesteps import EXPERTS, Expert, sample_timesteps
from wanforge.training.trainer import (
    Batch,
    TrainingCancelled,
    TrainProgress,
    draw_batch,
    evaluate,
)

CPU = torch.device("cpu")


def moving_square_clips(n: int, frames: int = 9, height: int = 32, width: int = 48) -> list[Clip]:
    """Clips of a coloured square sliding right on black, always the same way."""
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(n):
        video = np.zeros((frames, height, width, 3), np.uint8)
        y, x0 = int(rng.integers(0, height - 16)), int(rng.integers(0, 6))
        color = rng.integers(180, 256, 3)
        for f in range(frames):
            video[f, y : y + 16, x0 + 3 * f : x0 + 3 * f + 16] = color
        clips.append(Clip(video, "p3r5on, a square moves to the right"))
    return clips


def wide_components() -> DemoComponents:
    """The demo model with experts whose width (64) matches a 2x2 patch of 16 latent channels.

    The demo's experts are 24 wide, so their frozen output projection can only reach a 24-dim
    subspace of each 64-value patch: a LoRA cannot lower the loss by much on them.
    """
    components = build_demo_components()
    config = {**transformer_config(), "num_attention_heads": 4, "attention_head_dim": 16, "ffn_dim": 128}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        components.transformer = WanTransformer3DModel(**config).eval()
        torch.manual_seed(2)
        components.transformer_2 = WanTransformer3DModel(**config).eval()
    return components


def fixed_batches(components: DemoComponents, clips: list[Clip], expert: Expert) -> list[Batch]:
    cache = build_cache(as_pipeline(components), clips, CPU)
    generator = torch.Generator().manual_seed(1234)
    batches = []
    for clip in cache.clips:
        t = sample_timesteps(expert, 1, 0.9, 5.0, generator)
        noise = torch.randn((1, *clip.latents.shape), generator=generator)
        text = cache.text_embeds[clip.caption_index][None]
        batches.append(Batch(clip.latents[None], clip.condition[None], text, noise, t))
    return batches


def test_cache_matches_the_pipeline_latents_and_condition() -> None:
    components = build_demo_components()
    pipe = as_pipeline(components)
    clips = moving_square_clips(2)
    cache = build_cache(pipe, clips, CPU)
    assert cache.captions == ["p3r5on, a square moves to the right"]
    assert cache.text_embeds.shape == (1, 512, 32) and cache.empty_embeds.shape == (512, 32)
    video = frames_to_video(clips[1].frames)
    z = pipe.vae.config.z_dim
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, z, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, z, 1, 1, 1)
    with torch.no_grad():
        x0 = pipe.vae.encode(video).latent_dist.mode()
        first = torch.cat([video[:, :, :1], torch.zeros_like(video[:, :, 1:])], dim=2)
        cond = pipe.vae.encode(first).latent_dist.mode()
    torch.testing.assert_close(cache.clips[1].latents, ((x0 - mean) / std)[0], rtol=1e-5, atol=1e-5)
    condition = cache.clips[1].condition
    assert condition.shape == (20, 3, 4, 6)
    assert torch.equal(condition[:4, 0], torch.ones(4, 4, 6))  # mask: the first latent frame is given
    assert torch.equal(condition[:4, 1:], torch.zeros(4, 2, 4, 6))
    torch.testing.assert_close(condition[4:], ((cond - mean) / std)[0], rtol=1e-5, atol=1e-5)


def test_batches_are_reproducible_and_drop_captions() -> None:
    cache = build_cache(as_pipeline(build_demo_components()), moving_square_clips(3), CPU)
    config = TrainParams(
        steps=1, learning_rate=1e-4, lora_rank=4, caption_dropout=1.0, batch_size=2
    ).expert_config("low_noise")
    a = draw_batch(cache, config, torch.Generator().manual_seed(5))
    b = draw_batch(cache, config, torch.Generator().manual_seed(5))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    assert a.latents.shape == (2, 16, 3, 4, 6) and a.condition.shape == (2, 20, 3, 4, 6)
    assert torch.equal(a.text, cache.empty_embeds.expand(2, -1, -1))
    assert bool((a.timesteps < 900).all())
    half = TrainParams(steps=1, learning_rate=1e-4, lora_rank=4, caption_dropout=0.5).expert_config(
        "high_noise"
    )
    generator = torch.Generator().manual_seed(0)
    empty = [torch.equal(draw_batch(cache, half, generator).text[0], cache.empty_embeds) for _ in range(40)]
    assert 5 < sum(empty) < 35


def test_training_lowers_the_loss_of_both_experts(tmp_path: Path) -> None:
    clips = moving_square_clips(4)
    components = wide_components()
    pipe = as_pipeline(components)
    batches = {e: fixed_batches(components, clips, e) for e in EXPERTS}
    models = {"high_noise": pipe.transformer, "low_noise": pipe.transformer_2}
    before = {e: evaluate(models[e], batches[e]) for e in EXPERTS}
    params = TrainParams(steps=20, learning_rate=2e-2, lora_rank=8, export_dtype="float32")
    result = train_lora(pipe, clips, params, tmp_path, "learn", device="cpu")
    assert not lora_modules(pipe.transformer) and not lora_modules(pipe.transformer_2)
    pipe.load_lora_weights(str(result.high_noise_path), adapter_name="high")
    pipe.load_lora_weights(str(result.low_noise_path), adapter_name="low", load_into_transformer_2=True)
    after = {e: evaluate(models[e], batches[e]) for e in EXPERTS}
    for e in EXPERTS:
        assert after[e] <= 0.8 * before[e], (e, before[e], after[e])
        assert result.metrics[e]["eval_loss_after"] < result.metrics[e]["eval_loss_before"]


def test_resume_continues_from_the_last_checkpoint_and_matches_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    clips = moving_square_clips(2)
    params = TrainParams(
        steps=6,
        learning_rate=1e-2,
        lora_rank=4,
        checkpoint_every=2,
        seed=7,
        export_dtype="float32",
        eval_samples=1,
    )
    train_lora(build_demo_components(), clips, params, tmp_path / "straight", "x", device="cpu")

    class Killed(Exception):
        pass

    def kill_at(expert: Expert, step: int, seen: list[TrainProgress]) -> Callable[[TrainProgress], None]:
        def on_progress(p: TrainProgress) -> None:
            seen.append(p)
            if (p.expert, p.step) == (expert, step):
                raise Killed

        return on_progress

    job = tmp_path / "killed"
    first: list[TrainProgress] = []
    with pytest.raises(Killed):
        train_lora(
            build_demo_components(), clips, params, job, "x", kill_at("high_noise", 5, first), device="cpu"
        )
    assert load_checkpoint(checkpoint_path(job, "high_noise")).step == 4  # type: ignore[union-attr]

    second: list[TrainProgress] = []
    with pytest.raises(Killed):
        train_lora(
            build_demo_components(), clips, params, job, "x", kill_at("low_noise", 3, second), device="cpu"
        )
    assert [(p.expert, p.step) for p in second][:3] == [
        ("high_noise", 5),
        ("high_noise", 6),
        ("low_noise", 1),
    ]

    third: list[TrainProgress] = []
    result = train_lora(build_demo_components(), clips, params, job, "x", third.append, device="cpu")
    assert [(p.expert, p.step) for p in third] == [("low_noise", s) for s in (3, 4, 5, 6)]  # high skipped
    assert result.metrics["cache_loaded"] is True
    assert result.metrics["low_noise"]["resumed_from"] == 2
    for e in EXPERTS:
        straight = load_checkpoint(checkpoint_path(tmp_path / "straight", e))
        resumed = load_checkpoint(checkpoint_path(job, e))
        assert straight is not None and resumed is not None
        assert straight.lora.keys() == resumed.lora.keys()
        for key, value in straight.lora.items():
            torch.testing.assert_close(resumed.lora[key], value, rtol=0, atol=1e-6)
        assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)


def test_cancel_stops_between_steps_and_leaves_the_pipeline_clean(tmp_path: Path) -> None:
    pipe = as_pipeline(build_demo_components())
    calls: list[int] = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    params = TrainParams(steps=10, lora_rank=4, eval_samples=0)
    with pytest.raises(TrainingCancelled):
        train_lora(
            pipe, moving_square_clips(1), params, tmp_path, "x", should_cancel=should_cancel, device="cpu"
        )
    assert len(calls) == 3
    assert not lora_modules(pipe.transformer) and not lora_modules(pipe.transformer_2)
    assert not (tmp_path / "x_high_noise.safetensors").exists()


def test_resuming_with_other_parameters_is_refused(tmp_path: Path) -> None:
    clips = moving_square_clips(1)
    params = TrainParams(steps=2, lora_rank=4, eval_samples=0)
    train_lora(build_demo_components(), clips, params, tmp_path, "x", device="cpu")
    with pytest.raises(ValueError, match="learning_rate"):
        train_lora(
            build_demo_components(),
            clips,
            TrainParams(steps=2, lora_rank=4, learning_rate=1e-3),
            tmp_path,
            "x",
            device="cpu",
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [({"steps": 0}, "steps"), ({"caption_dropout": 1.5}, "caption_dropout"), ({"boundary": 1.0}, "boundary")],
)
def test_bad_parameters_are_refused(tmp_path: Path, change: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_lora(
            build_demo_components(),
            moving_square_clips(1),
            TrainParams(**change),  # type: ignore[arg-type]
            tmp_path,
            "x",
            device="cpu",
        )


def test_bad_frame_counts_are_refused(tmp_path: Path) -> None:
    clip = Clip(np.zeros((8, 32, 48, 3), np.uint8), "x")
    with pytest.raises(ValueError, match="4k\\+1"):
        train_lora(build_demo_components(), [clip], TrainParams(steps=1), tmp_path, "x", device="cpu")
