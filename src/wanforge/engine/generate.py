"""Image-to-video generation: plan the sizes, run the diffusers pipeline, upscale to the output size."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from PIL import Image

from wanforge.engine.adapters import AdapterCache, AppliedLoras
from wanforge.engine.loading import LoadedModel
from wanforge.engine.loras import Expert, LoraRequest
from wanforge.engine.profiles import ModelProfile, Sampling
from wanforge.engine.sizing import fit_image, generation_size, output_size
from wanforge.engine.upscale import LearnedUpscaler, upscale_frames
from wanforge.engine.vae import VaeTiles, VaeTiling, check_tiling, vae_tiling, wants_tiling
from wanforge.media.images import normalize_image

MAX_SEED = 2_147_483_647

StepCallback = Callable[[int, int], None]
# told which expert ran the step just done, each time that changes (high_noise first)
ExpertCallback = Callable[[Expert], None]
CancelCheck = Callable[[], bool]


class GenerationCancelled(Exception):
    """Raised between denoising steps when ``should_cancel()`` returns true."""


@dataclass(frozen=True)
class GenerationRequest:
    image: Image.Image
    prompt: str
    negative_prompt: str
    resolution: str
    seed: int
    duration_s: int = 5
    # LoRAs to apply for this request only (see engine/adapters.py); `()` runs the base model.
    loras: tuple[LoraRequest, ...] = ()
    # first-last-frame generation: the video ends on this image (fitted to the size like `image`)
    last_image: Image.Image | None = None
    # "ultra_fast": the profile's step-distilled schedule (the caller adds the distill LoRAs)
    sampling: Sampling = "standard"


@dataclass(frozen=True)
class GenerationPlan:
    """Everything the pipeline call needs, derived from a request and a profile."""

    gen_width: int
    gen_height: int
    width: int
    height: int
    num_frames: int
    steps: int
    flow_shift: float
    guidance_scale: float
    guidance_scale_2: float
    negative_prompt: str
    max_sequence_length: int
    # fixed unshifted sigmas of a distilled schedule (flow-matching Euler); None: UniPC over `steps`
    sigmas: tuple[float, ...] | None = None

    @property
    def cfg(self) -> bool:
        """Whether each step runs the unconditional pass too (diffusers: ``guidance_scale > 1``)."""
        return self.guidance_scale > 1


@dataclass
class GenerationResult:
    frames: np.ndarray
    fps: int
    seed: int
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)
    # one entry per applied LoRA per expert: {"sha256", "name", "scale", "expert", "format"}
    adapters: list[dict[str, Any]] = field(default_factory=list)
    # what was skipped in partially matching LoRA files (for the prediction's logs)
    notes: list[str] = field(default_factory=list)
    # the schedule that ran: denoising steps and whether each step had a CFG pass
    sampling: Sampling = "standard"
    steps: int = 0
    cfg: bool = True
    attention_backend: str = "native"
    # whether the VAE encoded and decoded in tiles (WANFORGE_VAE_TILING, engine/vae.py)
    vae_tiled: bool = False
    # what resized the frames to the output size: "learned" (WANFORGE_UPSCALER, the 1080p tier
    # only) or "lanczos" (which is a plain crop, or nothing, when the sizes already match)
    upscaler: str = "lanczos"


def resolve_seed(seed: int) -> int:
    """``-1`` becomes a random seed in ``0..2147483647``; any other value must already be in range."""
    if seed == -1:
        return secrets.randbelow(MAX_SEED + 1)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be -1 or in 0..{MAX_SEED}, got {seed}")
    return seed


def plan_generation(profile: ModelProfile, req: GenerationRequest) -> GenerationPlan:
    image_w, image_h = req.image.size
    width, height = output_size(image_w, image_h, req.resolution)
    gen_resolution = profile.generation_resolution(req.resolution)
    gen_width, gen_height = generation_size(image_w, image_h, gen_resolution, area=profile.generation_area)
    if req.sampling == "ultra_fast":
        fast = profile.ultra_fast
        return GenerationPlan(
            gen_width=gen_width,
            gen_height=gen_height,
            width=width,
            height=height,
            num_frames=profile.num_frames(req.duration_s),
            steps=len(fast.step_list),
            flow_shift=fast.shift,
            guidance_scale=fast.guidance_scale,
            guidance_scale_2=fast.guidance_scale_2,
            negative_prompt=profile.negative_prompt_for(req.negative_prompt),
            max_sequence_length=profile.max_sequence_length,
            sigmas=fast.sigmas(),
        )
    return GenerationPlan(
        gen_width=gen_width,
        gen_height=gen_height,
        width=width,
        height=height,
        num_frames=profile.num_frames(req.duration_s),
        steps=profile.steps,
        flow_shift=profile.flow_shift_for(gen_resolution),
        guidance_scale=profile.guidance_scale,
        guidance_scale_2=profile.guidance_scale_2,
        negative_prompt=profile.negative_prompt_for(req.negative_prompt),
        max_sequence_length=profile.max_sequence_length,
    )


def make_scheduler(config: Any, flow_shift: float) -> UniPCMultistepScheduler:
    """A fresh UniPC flow-matching scheduler from the checkpoint's config, with ``flow_shift``."""
    return UniPCMultistepScheduler.from_config(
        config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift
    )


class FixedSigmasScheduler(FlowMatchEulerDiscreteScheduler):
    """diffusers' flow-matching Euler scheduler held to one list of sigmas.

    ``WanImageToVideoPipeline`` calls ``scheduler.set_timesteps(num_inference_steps)`` and has no
    ``sigmas`` argument to pass on, so this subclass supplies them: everything else (the shift,
    the terminal sigma 0, the Euler step) is diffusers' own code."""

    fixed_sigmas: tuple[float, ...] = ()

    def set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        **_ignored: Any,
    ) -> None:
        if num_inference_steps is not None and num_inference_steps != len(self.fixed_sigmas):
            raise ValueError(
                f"this schedule has {len(self.fixed_sigmas)} steps, the pipeline asked for {num_inference_steps}"
            )
        super().set_timesteps(device=device, sigmas=list(self.fixed_sigmas))  # type: ignore[arg-type]


def distilled_scheduler(config: Any, sigmas: tuple[float, ...], shift: float) -> FixedSigmasScheduler:
    """A flow-matching Euler scheduler that runs exactly ``sigmas`` (shifted by ``shift``)."""
    scheduler = FixedSigmasScheduler(
        num_train_timesteps=int(config.get("num_train_timesteps", 1000)), shift=shift
    )
    scheduler.fixed_sigmas = sigmas
    return scheduler


def scheduler_for(config: Any, plan: GenerationPlan) -> UniPCMultistepScheduler | FixedSigmasScheduler:
    """The plan's scheduler, built fresh for every call from the checkpoint's scheduler config."""
    if plan.sigmas is not None:
        return distilled_scheduler(config, plan.sigmas, plan.flow_shift)
    return make_scheduler(config, plan.flow_shift)


def run_pipeline(
    pipe: WanImageToVideoPipeline,
    image: Image.Image,
    prompt: str,
    plan: GenerationPlan,
    generator: torch.Generator,
    callback: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None = None,
    last_image: Image.Image | None = None,
) -> np.ndarray:
    """One diffusers pipeline call; float32 frames ``(F, gen_height, gen_width, 3)`` in ``[0, 1]``.

    ``last_image`` (already at the generation size) makes the video end on it: the pipeline
    VAE-encodes it as the last frame of the condition, beside the first."""
    checkpoint_scheduler = pipe.scheduler
    pipe.scheduler = scheduler_for(checkpoint_scheduler.config, plan)
    try:
        output = _call(pipe, image, prompt, plan, generator, callback, last_image)
    finally:
        if plan.sigmas is not None:  # the next call builds its UniPC from the checkpoint's config again
            pipe.scheduler = checkpoint_scheduler
    return np.asarray(output.frames[0], dtype=np.float32)


def _call(
    pipe: WanImageToVideoPipeline,
    image: Image.Image,
    prompt: str,
    plan: GenerationPlan,
    generator: torch.Generator,
    callback: Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None,
    last_image: Image.Image | None,
) -> Any:
    return pipe(
        image=image,
        last_image=last_image,
        prompt=prompt,
        negative_prompt=plan.negative_prompt,
        height=plan.gen_height,
        width=plan.gen_width,
        num_frames=plan.num_frames,
        num_inference_steps=plan.steps,
        guidance_scale=plan.guidance_scale,
        guidance_scale_2=plan.guidance_scale_2,
        generator=generator,
        output_type="np",
        max_sequence_length=plan.max_sequence_length,
        callback_on_step_end=callback,
    )


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in ``[0, 1]`` to uint8, rounding to nearest."""
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


@contextmanager
def cpu_threads(device: torch.device, threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch intra-op threads on a CPU device; restore the previous count."""
    if device.type != "cpu" or threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def expert_of(pipe: Any, timestep: Any) -> Expert:
    """The expert that denoises at ``timestep``: the high-noise one (``transformer``) at and above
    the pipeline's boundary, the low-noise one (``transformer_2``) below it, as diffusers switches."""
    ratio = getattr(pipe.config, "boundary_ratio", None)
    if ratio is None or getattr(pipe, "transformer_2", None) is None:
        return "high_noise"
    boundary = ratio * pipe.scheduler.config.num_train_timesteps
    return "high_noise" if float(timestep) >= boundary else "low_noise"


def _step_callback(
    on_step: StepCallback | None,
    should_cancel: CancelCheck | None,
    on_expert: ExpertCallback | None = None,
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]] | None:
    if on_step is None and should_cancel is None and on_expert is None:
        return None
    last: list[Expert] = []

    def callback(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if on_expert is not None and (expert := expert_of(pipe, t)) not in last[-1:]:
            last.append(expert)
            on_expert(expert)
        if on_step is not None:
            on_step(i + 1, pipe.num_timesteps)
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled(f"cancelled after step {i + 1} of {pipe.num_timesteps}")
        return {}

    return callback


class Engine:
    """Generates videos with one loaded model.

    ``lora_cache_size``: how many (LoRA file, expert) adapters stay loaded between requests.
    ``vae_tiling``: ``"auto"`` (tiled above the 720p area), ``"on"`` or ``"off"``, with
    ``vae_tiles`` (default: diffusers' 256-pixel tiles); see :mod:`wanforge.engine.vae`.
    ``upscaler``: a super-resolution model for the 1080p tier (see :meth:`uses_learned_upscaler`);
    ``None``: Lanczos everywhere.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        lora_cache_size: int = 8,
        *,
        vae_tiling: VaeTiling = "auto",
        vae_tiles: VaeTiles | None = None,
        upscaler: LearnedUpscaler | None = None,
    ) -> None:
        self.loaded = loaded
        self.vae_tiling = check_tiling(vae_tiling)
        self.vae_tiles = vae_tiles
        self.upscaler = upscaler
        self.adapters = AdapterCache(
            loaded.pipe,
            lora_cache_size,
            allow_deltas=loaded.memory_mode != "group_offload" and loaded.fp8 != "compute",
            no_deltas_reason=(
                "this worker's float8 weights (WANFORGE_FP8=compute)"
                if loaded.fp8 == "compute"
                else "this worker's memory mode (group_offload)"
            ),
            adapter_dtype=loaded.dtype if loaded.fp8 == "storage" else None,
            slots=loaded.lora_slots,
        )

    def uses_learned_upscaler(self, resolution: str, plan: GenerationPlan) -> bool:
        """The learned upscaler runs for the 1080p tier when the model denoised at a smaller size
        (the default ``strategy_1080p="upscale"``: 720p); native 1080p only crops."""
        smaller = plan.gen_width < plan.width or plan.gen_height < plan.height
        return self.upscaler is not None and resolution == "1080p" and smaller

    def render(
        self,
        req: GenerationRequest,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_expert: ExpertCallback | None = None,
    ) -> tuple[np.ndarray, GenerationPlan]:
        """Denoise and decode at the generation size; float32 frames in ``[0, 1]`` and the plan.

        ``on_step(done, total)`` runs after every denoising step (``done`` = 1..total);
        ``should_cancel()`` is polled before the run and after every step, and a true answer
        raises :class:`GenerationCancelled`. A file in ``req.loras`` that is not a usable LoRA
        for this model raises :class:`~wanforge.engine.loras.LoraError` before any step.
        ``on_expert(expert)`` runs after a step when the expert that ran it is not the one that ran
        the step before (``"high_noise"`` after the first step, ``"low_noise"`` once, at the switch).
        """
        frames, plan, _applied, _tiled = self._render(req, on_step, should_cancel, on_expert)
        return frames, plan

    def _render(
        self,
        req: GenerationRequest,
        on_step: StepCallback | None,
        should_cancel: CancelCheck | None,
        on_expert: ExpertCallback | None = None,
    ) -> tuple[np.ndarray, GenerationPlan, AppliedLoras, bool]:
        if not 0 <= req.seed <= MAX_SEED:
            raise ValueError(
                f"seed must be resolved to 0..{MAX_SEED} first (see resolve_seed), got {req.seed}"
            )
        if should_cancel is not None and should_cancel():
            raise GenerationCancelled("cancelled before the first step")
        req = replace(req, image=normalize_image(req.image))
        plan = plan_generation(self.loaded.profile, req)
        fitted = fit_image(req.image, plan.gen_width, plan.gen_height)
        last = (
            None
            if req.last_image is None
            else fit_image(normalize_image(req.last_image), plan.gen_width, plan.gen_height)
        )
        generator = torch.Generator(device=self.loaded.device).manual_seed(req.seed)
        pipe = self.loaded.pipe
        callback = _step_callback(on_step, should_cancel, on_expert)
        tiled = wants_tiling(self.vae_tiling, plan.gen_width, plan.gen_height)
        try:
            with (
                self.adapters.applied(req.loras) as applied,
                cpu_threads(self.loaded.device, self.loaded.profile.cpu_threads),
                vae_tiling(pipe.vae, tiled, self.vae_tiles),
            ):
                frames = run_pipeline(pipe, fitted, req.prompt, plan, generator, callback, last)
        except Exception:
            # Offload the model that was running, as a finished call does; keep the first error.
            with suppress(Exception):
                pipe.maybe_free_model_hooks()
            raise
        return frames, plan, applied, tiled

    def generate(
        self,
        req: GenerationRequest,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_expert: ExpertCallback | None = None,
    ) -> GenerationResult:
        """Generate uint8 frames ``(F, height, width, 3)`` at the output size of ``req.resolution``."""
        started = time.perf_counter()
        raw, plan, applied, tiled = self._render(req, on_step, should_cancel, on_expert)
        rendered = time.perf_counter()
        upscaler = self.upscaler if self.uses_learned_upscaler(req.resolution, plan) else None
        if upscaler is not None:
            frames = upscaler.upscale(raw, plan.width, plan.height)
        else:
            frames = upscale_frames(to_uint8(raw), plan.width, plan.height)
        finished = time.perf_counter()
        return GenerationResult(
            frames=frames,
            fps=self.loaded.profile.fps,
            seed=req.seed,
            width=plan.width,
            height=plan.height,
            timings={
                "render_s": rendered - started,
                "upscale_s": finished - rendered,
                "total_s": finished - started,
                "lora_load_s": applied.load_s,
                "lora_activate_s": applied.activate_s,
            },
            adapters=applied.adapters,
            notes=applied.notes,
            sampling=req.sampling,
            steps=plan.steps,
            cfg=plan.cfg,
            attention_backend=self.loaded.attention_backend,
            vae_tiled=tiled,
            upscaler="lanczos" if upscaler is None else "learned",
        )
