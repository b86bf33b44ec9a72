"""The image-to-video task: read the image(s) and LoRAs, run the engine, encode the MP4, store it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from wanforge.catalog import STORED_INPUT, I2VInput, I2VLoraInput, generation_resolution, get_model
from wanforge.engine.generate import (
    Engine,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    resolve_seed,
)
from wanforge.engine.loras import LoraError
from wanforge.engine.video import write_mp4
from wanforge.media.errors import MediaError
from wanforge.media.images import decode_image
from wanforge.safety.checker import ContentChecker
from wanforge.vocabulary import ErrorCode
from wanforge.worker.affinity import HeldLoras
from wanforge.worker.context import JobContext, TaskError, TaskOutcome, TaskStopped
from wanforge.worker.distill import DISTILL_NAMES, distill_loras
from wanforge.worker.expansion import prompt_for
from wanforge.worker.lora_sources import ResolvedLoras, requested, resolve_loras
from wanforge.worker.moderation import screen_input, screen_output


def run_generate(
    ctx: JobContext, engine: Engine, checker: ContentChecker | None = None, held: HeldLoras | None = None
) -> TaskOutcome:
    spec = get_model(ctx.prediction.model)
    inp = (
        spec.input_model.model_validate(ctx.prediction.input, context=STORED_INPUT)
        if spec is not None
        else None
    )
    if spec is None or not isinstance(inp, I2VInput | I2VLoraInput):
        raise TaskError(
            ErrorCode.INVALID_PARAMETER, f"model {ctx.prediction.model} is not an image-to-video model"
        )
    resolution = generation_resolution(spec, inp)
    if resolution is None:
        raise TaskError(ErrorCode.INVALID_PARAMETER, f"model {spec.id} names no resolution")
    # the seed is fixed on the first attempt and kept, so a re-run after a crash makes the same video
    seed = ctx.prediction.result.get("seed") if ctx.prediction.result else None
    if not isinstance(seed, int):
        seed = resolve_seed(inp.seed)
        ctx.remember({"seed": seed})

    ultra_fast = spec.sampling == "ultra_fast"
    # checked before any download: a worker without the distill LoRAs fails the job at once
    distill = distill_loras(ctx.settings, spec.id) if ultra_fast else ()

    image = _read_image(ctx, inp.image, "image")
    screen_input(ctx, checker, image)
    with_loras = isinstance(inp, I2VLoraInput)
    last_image = None
    loras = ResolvedLoras()
    if isinstance(inp, I2VLoraInput) and inp.last_image:
        last_image = _read_image(ctx, inp.last_image, "last_image")
    if isinstance(inp, I2VLoraInput) and any((inp.loras, inp.high_noise_loras, inp.low_noise_loras)):
        ctx.progress.report("fetching loras", 0, 1, force=True, seed=seed)
        loras = resolve_loras(ctx, inp)
        if held is not None:  # the paths this worker will hold loaded (LoRA affinity at claim)
            held.note(
                (entry.path, r.request.sha256)
                for (_, entry, _), r in zip(requested(inp), loras.loras, strict=True)
            )

    request = GenerationRequest(
        image=image,
        # the LoRA models take no prompt expansion (as on the hosted service)
        prompt=prompt_for(ctx, inp, image) if isinstance(inp, I2VInput) else inp.prompt,
        negative_prompt=inp.negative_prompt,
        resolution=resolution,
        seed=seed,
        duration_s=inp.duration,
        # the distill LoRAs first, the request's own stacked on top
        loras=(*distill, *loras.requests),
        last_image=last_image,
        sampling=spec.sampling,
    )
    ctx.progress.report("denoising", 0, 1, force=True, seed=seed)
    started = time.monotonic()
    timer = StepTimer(ctx.step_seconds)

    running: dict[str, Any] = {}  # the expert that ran the last step, for the progress

    def on_step(done: int, total: int) -> None:
        timer.step()
        ctx.progress.report("denoising", done, total, seed=seed, **running)

    try:
        result = engine.generate(
            request,
            on_step=on_step,
            should_cancel=ctx.lease.should_stop,
            on_expert=lambda expert: running.update(expert=expert),
        )
    except GenerationCancelled as exc:
        raise TaskStopped(str(exc)) from exc
    except LoraError as exc:
        if any(name in str(exc) for name in DISTILL_NAMES.values()):  # the operator's file, not the client's
            raise TaskError(ErrorCode.UNAVAILABLE, f"model {spec.id} is not available: {exc}") from exc
        fields = loras.fields_named_in(str(exc))
        where = ", ".join(fields) if fields else "loras"
        raise TaskError(ErrorCode.INVALID_PARAMETER, f"invalid parameter {where}: {exc}") from exc
    except ValueError as exc:
        raise TaskError(ErrorCode.INVALID_PARAMETER, f"invalid input: {exc}") from exc
    inference_s = time.monotonic() - started
    if result.notes:  # what a partially matching LoRA file skipped
        ctx.progress.log(*result.notes)

    ctx.progress.report("encoding", 1, 1, force=True, seed=seed)
    ctx.job_dir.mkdir(parents=True, exist_ok=True)
    local = ctx.job_dir / f"{ctx.prediction.id}.mp4"
    write_mp4(result.frames, local, result.fps)
    safety = screen_output(ctx, checker, result.frames, local)
    key = ctx.storage.new_key("outputs", f"{ctx.prediction.id}.mp4")
    ctx.storage.put_file(key, local)
    outcome: dict[str, Any] = {
        "seed": seed,
        "width": result.width,
        "height": result.height,
        "frames": int(result.frames.shape[0]),
        "fps": result.fps,
        "inference_s": round(inference_s, 3),
        # the schedule that ran: denoising steps, and whether each had a CFG (unconditional) pass
        "sampling": result.sampling,
        "steps": result.steps,
        "cfg": result.cfg,
        "attention_backend": result.attention_backend,
        **safety,
    }
    if result.vae_tiled:  # WANFORGE_VAE_TILING
        outcome["vae_tiled"] = True
    if with_loras or ultra_fast:
        outcome.update(_lora_facts(result, loras))
    if result.upscaler == "learned":  # WANFORGE_UPSCALER ran (the 1080p tier): its time beside the others
        outcome["upscaler"] = result.upscaler
        outcome.setdefault("timings", {})["upscale"] = _ms(result.timings.get("upscale_s", 0.0))
    return TaskOutcome(outputs=[key], result=outcome)


class StepTimer:
    """Appends to `into` the time between one denoising step's end and the next one's. The first
    step is not timed: it also holds the prompt and image encoding that precede the loop."""

    def __init__(self, into: list[float], clock: Callable[[], float] = time.monotonic) -> None:
        self.into = into
        self.clock = clock
        self._last: float | None = None

    def step(self) -> None:
        now = self.clock()
        if self._last is not None:
            self.into.append(now - self._last)
        self._last = now


def _read_image(ctx: JobContext, url: str, what: str) -> Image.Image:
    data = ctx.read_media(url, what)
    try:
        return decode_image(data, max_pixels=ctx.settings.max_image_pixels)
    except MediaError as exc:
        raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read {what}: {exc}") from exc


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _lora_facts(result: GenerationResult, loras: ResolvedLoras) -> dict[str, Any]:
    """The adapters used (one per expert they applied to) and the LoRA timings, in milliseconds:
    `timings` here is shown beside `timings.inference` on the prediction."""
    timings = {"lora_fetch": _ms(loras.fetch_s)}
    for name in ("lora_load", "lora_activate"):
        if (seconds := result.timings.get(f"{name}_s")) is not None:
            timings[name] = _ms(seconds)
    return {"adapters": result.adapters, "timings": timings}
