"""The image-to-video task: read the image, run the engine, encode the MP4, store it."""

from __future__ import annotations

import time

from wanforge.catalog import STORED_INPUT, I2VInput, get_model
from wanforge.engine.generate import Engine, GenerationCancelled, GenerationRequest, resolve_seed
from wanforge.engine.video import write_mp4
from wanforge.media.errors import MediaError
from wanforge.media.images import decode_image
from wanforge.safety.checker import ContentChecker
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import JobContext, TaskError, TaskOutcome, TaskStopped
from wanforge.worker.expansion import prompt_for
from wanforge.worker.moderation import screen_input, screen_output


def run_generate(ctx: JobContext, engine: Engine, checker: ContentChecker | None = None) -> TaskOutcome:
    spec = get_model(ctx.prediction.model)
    if spec is None or spec.resolution is None:
        raise TaskError(
            ErrorCode.INVALID_PARAMETER, f"model {ctx.prediction.model} is not an image-to-video model"
        )
    inp = I2VInput.model_validate(ctx.prediction.input, context=STORED_INPUT)
    # the seed is fixed on the first attempt and kept, so a re-run after a crash makes the same video
    seed = ctx.prediction.result.get("seed") if ctx.prediction.result else None
    if not isinstance(seed, int):
        seed = resolve_seed(inp.seed)
        ctx.remember({"seed": seed})

    data = ctx.read_media(inp.image, "image")
    try:
        image = decode_image(data, max_pixels=ctx.settings.max_image_pixels)
    except MediaError as exc:
        raise TaskError(ErrorCode.MEDIA_ACCESS_FAILED, f"cannot read image: {exc}") from exc
    screen_input(ctx, checker, image)

    request = GenerationRequest(
        image=image,
        prompt=prompt_for(ctx, inp, image),
        negative_prompt=inp.negative_prompt,
        resolution=spec.resolution,
        seed=seed,
        duration_s=inp.duration,
    )
    ctx.progress.report("denoising", 0, 1, force=True, seed=seed)
    started = time.monotonic()
    try:
        result = engine.generate(
            request,
            on_step=lambda i, n: ctx.progress.report("denoising", i, n, seed=seed),
            should_cancel=ctx.lease.should_stop,
        )
    except GenerationCancelled as exc:
        raise TaskStopped(str(exc)) from exc
    except ValueError as exc:
        raise TaskError(ErrorCode.INVALID_PARAMETER, f"invalid input: {exc}") from exc
    inference_s = time.monotonic() - started

    ctx.progress.report("encoding", 1, 1, force=True, seed=seed)
    ctx.job_dir.mkdir(parents=True, exist_ok=True)
    local = ctx.job_dir / f"{ctx.prediction.id}.mp4"
    write_mp4(result.frames, local, result.fps)
    safety = screen_output(ctx, checker, result.frames, local)
    key = ctx.storage.new_key("outputs", f"{ctx.prediction.id}.mp4")
    ctx.storage.put_file(key, local)
    return TaskOutcome(
        outputs=[key],
        result={
            "seed": seed,
            "width": result.width,
            "height": result.height,
            "frames": int(result.frames.shape[0]),
            "fps": result.fps,
            "inference_s": round(inference_s, 3),
            **safety,
        },
    )
