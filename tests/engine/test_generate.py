from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from PIL import Image

from wanforge.engine.demo import build_demo_components, build_scheduler
from wanforge.engine.generate import (
    MAX_SEED,
    Engine,
    GenerationCancelled,
    GenerationRequest,
    plan_generation,
    resolve_seed,
    to_uint8,
)
from wanforge.engine.loading import LoadedModel
from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B, WAN_NEGATIVE_PROMPT
from wanforge.engine.upscale import upscale_frames

EngineFactory = Callable[..., Engine]
ImageFactory = Callable[..., Image.Image]
PROMPT = "a cat walks across the room while the camera pans slowly to the left"


def direct_diffusers(
    image: Image.Image, *, seed: int, steps: int, num_frames: int, shift: float, negative: str
) -> np.ndarray:
    """The reference: a plain diffusers call on freshly built demo components."""
    components = build_demo_components()
    components.scheduler = build_scheduler(shift)
    pipe = WanImageToVideoPipeline(**components.as_kwargs())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        image=image,
        prompt=PROMPT,
        negative_prompt=negative,
        height=image.height,
        width=image.width,
        num_frames=num_frames,
        num_inference_steps=steps,
        guidance_scale=3.5,
        guidance_scale_2=3.5,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    )
    return np.asarray(out.frames[0], dtype=np.float32)


@pytest.mark.parametrize(
    ("resolution", "steps", "duration_s", "shift"),
    [("720p", 40, 5, 5.0), ("480p", 4, 1, 5.0)],  # Wan 2.2 samples with shift 5.0 at every size
)
def test_parity_with_a_direct_diffusers_call(
    demo_loaded: LoadedModel,
    make_image: ImageFactory,
    resolution: str,
    steps: int,
    duration_s: int,
    shift: float,
) -> None:
    image = make_image(112, 64, seed=3)
    engine = Engine(replace(demo_loaded, profile=replace(DEMO, steps=steps)))
    req = GenerationRequest(image, PROMPT, "blurry, static", resolution, seed=1234, duration_s=duration_s)
    ours, plan = engine.render(req)
    assert (plan.gen_width, plan.gen_height, plan.flow_shift) == (112, 64, shift)
    reference = direct_diffusers(
        image, seed=1234, steps=steps, num_frames=16 * duration_s + 1, shift=shift, negative="blurry, static"
    )
    assert ours.shape == reference.shape == (16 * duration_s + 1, 64, 112, 3)
    assert np.abs(ours - reference).max() <= 1e-4

    # generate() is exactly render() + rounding + upscaling to the output size
    result = engine.generate(req)
    assert np.array_equal(result.frames, upscale_frames(to_uint8(reference), plan.width, plan.height))


def test_parity_with_the_default_negative_prompt(demo_loaded: LoadedModel, make_image: ImageFactory) -> None:
    image = make_image(112, 64, seed=4)
    engine = Engine(replace(demo_loaded, profile=replace(DEMO, steps=2)))
    ours, _ = engine.render(GenerationRequest(image, PROMPT, "", "720p", seed=9, duration_s=1))
    reference = direct_diffusers(
        image, seed=9, steps=2, num_frames=17, shift=5.0, negative=WAN_NEGATIVE_PROMPT
    )
    assert np.abs(ours - reference).max() <= 1e-4


def test_same_seed_same_frames_different_seed_different_frames(
    engine_with: EngineFactory, make_image: ImageFactory
) -> None:
    engine = engine_with()
    image = make_image(160, 90)
    first = engine.generate(GenerationRequest(image, PROMPT, "", "480p", seed=5, duration_s=1))
    again = engine.generate(GenerationRequest(image, PROMPT, "", "480p", seed=5, duration_s=1))
    other = engine.generate(GenerationRequest(image, PROMPT, "", "480p", seed=6, duration_s=1))
    assert np.array_equal(first.frames, again.frames)
    assert np.abs(first.frames.astype(int) - other.frames.astype(int)).mean() > 1.0


def test_progress_is_reported_for_every_step(engine_with: EngineFactory, make_image: ImageFactory) -> None:
    steps: list[tuple[int, int]] = []
    engine_with(steps=5).render(
        GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=1, duration_s=1),
        on_step=lambda i, n: steps.append((i, n)),
    )
    assert steps == [(i, 5) for i in range(1, 6)]


def test_the_expert_of_each_step_is_the_one_that_ran_it(
    engine_with: EngineFactory, make_image: ImageFactory
) -> None:
    """`on_expert` names the expert that really ran each step (hooks on both transformers say so):
    the high-noise one first, the low-noise one from the switch on, each named once."""
    engine = engine_with(steps=8)
    pipe = engine.loaded.pipe
    ran: list[str] = []  # which transformer ran each forward pass (two per step: CFG)
    hooks = [
        module.register_forward_pre_hook(lambda *_a, name=name: ran.append(name))
        for name, module in (("high_noise", pipe.transformer), ("low_noise", pipe.transformer_2))
    ]
    named: list[str] = []
    per_step: list[str] = []
    try:
        engine.render(
            GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=1, duration_s=1),
            on_step=lambda i, n: per_step.append(named[-1]),
            on_expert=named.append,
        )
    finally:
        for hook in hooks:
            hook.remove()
    assert named == ["high_noise", "low_noise"]
    assert per_step == ran[::2] and len(per_step) == 8
    assert per_step.count("high_noise") > 0 and per_step.count("low_noise") > 0


def test_cancellation_raises_between_steps_and_leaves_the_engine_usable(
    engine_with: EngineFactory, make_image: ImageFactory
) -> None:
    engine = engine_with(steps=6)
    req = GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=2, duration_s=1)
    steps: list[int] = []
    with pytest.raises(GenerationCancelled):
        engine.render(req, on_step=lambda i, n: steps.append(i), should_cancel=lambda: len(steps) >= 2)
    assert steps == [1, 2]

    clean, _ = engine.render(req)
    fresh, _ = engine.render(req)
    assert np.array_equal(clean, fresh)


def test_the_demo_profile_runs_torch_on_one_thread(
    engine_with: EngineFactory, make_image: ImageFactory
) -> None:
    torch.set_num_threads(2)
    seen: list[int] = []
    engine_with().render(
        GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=2, duration_s=1),
        on_step=lambda i, n: seen.append(torch.get_num_threads()),
    )
    assert seen == [1, 1]
    assert torch.get_num_threads() == 2  # restored (the autouse fixture resets it afterwards)


def test_cancellation_before_the_first_step(engine_with: EngineFactory, make_image: ImageFactory) -> None:
    calls: list[int] = []
    with pytest.raises(GenerationCancelled):
        engine_with().generate(
            GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=2, duration_s=1),
            on_step=lambda i, n: calls.append(i),
            should_cancel=lambda: True,
        )
    assert calls == []


def test_1080p_demo_generation_of_a_16_9_image(demo_loaded: LoadedModel, make_image: ImageFactory) -> None:
    # the demo profile's real defaults: 40 steps, 81 frames, upscaled to 1920x1080
    result = Engine(demo_loaded).generate(
        GenerationRequest(make_image(1280, 720), PROMPT, "", "1080p", seed=42)
    )
    assert result.frames.shape == (81, 1080, 1920, 3)
    assert result.frames.dtype == np.uint8
    assert (result.width, result.height, result.fps, result.seed) == (1920, 1080, 16, 42)
    assert set(result.timings) == {"render_s", "upscale_s", "total_s", "lora_load_s", "lora_activate_s"}
    assert (result.adapters, result.notes) == ([], [])


def test_plan_for_the_real_profile() -> None:
    image = Image.new("RGB", (1920, 1080))
    plan = plan_generation(WAN22_I2V_A14B, GenerationRequest(image, "p", "", "1080p", seed=0))
    assert (plan.gen_width, plan.gen_height, plan.width, plan.height) == (1280, 720, 1920, 1080)
    assert (plan.steps, plan.num_frames, plan.flow_shift) == (40, 81, 5.0)
    assert plan.negative_prompt == WAN_NEGATIVE_PROMPT

    native = replace(WAN22_I2V_A14B, strategy_1080p="native")
    plan = plan_generation(native, GenerationRequest(image, "p", "ugly", "1080p", seed=0, duration_s=8))
    assert (plan.gen_width, plan.gen_height, plan.num_frames) == (1920, 1088, 129)
    assert plan.negative_prompt == "ugly"

    plan = plan_generation(WAN22_I2V_A14B, GenerationRequest(image, "p", "", "480p", seed=0))
    assert (plan.gen_width, plan.gen_height, plan.flow_shift) == (832, 480, 5.0)


def test_plan_for_the_demo_profile() -> None:
    portrait = Image.new("RGB", (720, 1280))
    plan = plan_generation(DEMO, GenerationRequest(portrait, "p", "", "720p", seed=0))
    assert (plan.gen_width, plan.gen_height, plan.width, plan.height) == (64, 112, 720, 1280)


def test_resolve_seed() -> None:
    assert resolve_seed(0) == 0
    assert resolve_seed(MAX_SEED) == MAX_SEED
    drawn = {resolve_seed(-1) for _ in range(8)}
    assert all(0 <= s <= MAX_SEED for s in drawn) and len(drawn) > 1
    for bad in (-2, MAX_SEED + 1):
        with pytest.raises(ValueError):
            resolve_seed(bad)


def test_an_unresolved_seed_is_refused(engine_with: EngineFactory, make_image: ImageFactory) -> None:
    with pytest.raises(ValueError, match="resolve_seed"):
        engine_with(steps=1).generate(GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=-1))


def test_to_uint8_rounds_and_clips() -> None:
    floats = np.array([-0.1, 0.0, 0.6 / 255, 0.499, 1.0, 1.2], dtype=np.float32)
    assert to_uint8(floats).tolist() == [0, 0, 1, 127, 255, 255]


def test_duration_8_gives_129_frames(engine_with: EngineFactory, make_image: ImageFactory) -> None:
    # the real 16 fps: 8 s -> 16 * 8 + 1 = 129 frames, denoised and delivered
    result = engine_with(steps=1, fps=16).generate(
        GenerationRequest(make_image(112, 64), PROMPT, "", "480p", seed=3, duration_s=8)
    )
    assert result.frames.shape == (129, 480, 832, 3)
    assert result.fps == 16


def test_last_image_equals_diffusers_own_last_image_call(
    demo_loaded: LoadedModel, make_image: ImageFactory
) -> None:
    image, last = make_image(112, 64, seed=3), make_image(112, 64, seed=11)
    engine = Engine(replace(demo_loaded, profile=replace(DEMO, steps=2)))
    req = GenerationRequest(image, PROMPT, "blurry", "480p", seed=21, duration_s=1, last_image=last)
    ours, _ = engine.render(req)

    components = build_demo_components()
    components.scheduler = build_scheduler(5.0)  # Wan 2.2: shift 5.0 at every size, 480p too
    pipe = WanImageToVideoPipeline(**components.as_kwargs())
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        image=image,
        last_image=last,
        prompt=PROMPT,
        negative_prompt="blurry",
        height=64,
        width=112,
        num_frames=17,
        num_inference_steps=2,
        guidance_scale=3.5,
        guidance_scale_2=3.5,
        generator=torch.Generator("cpu").manual_seed(21),
        output_type="np",
    ).frames[0]
    assert ours.shape == reference.shape == (17, 64, 112, 3)
    assert np.abs(ours - reference).max() <= 1e-4

    without, _ = engine.render(replace(req, last_image=None))
    assert np.abs(ours - without).mean() > 1e-3  # the last frame changes the video


def test_last_image_is_fitted_like_the_first(engine_with: EngineFactory, make_image: ImageFactory) -> None:
    """A last image of another size and mode is made RGB and cropped to the generation size."""
    from wanforge.engine.sizing import fit_image
    from wanforge.media.images import normalize_image

    engine = engine_with(steps=1)
    image = make_image(112, 64, seed=3)
    odd = make_image(90, 90, seed=11).convert("RGBA")
    req = GenerationRequest(image, PROMPT, "", "480p", seed=1, duration_s=1, last_image=odd)
    a, _ = engine.render(req)
    b, _ = engine.render(replace(req, last_image=fit_image(normalize_image(odd), 112, 64)))
    assert a.shape == (9, 64, 112, 3)
    assert np.array_equal(a, b)
