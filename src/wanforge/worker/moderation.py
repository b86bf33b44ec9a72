"""Content safety in a generate job: check the input image (when asked) and every output video.

Under `WANFORGE_NSFW_POLICY=flag` the verdicts fill `has_nsfw_contents`; under `block` a flagged
input fails the job with 1200 before generating, and a flagged output is withheld (never stored)
and fails it with 1200. Without a checker nothing is recorded and the field stays empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wanforge.predictions import NSFW
from wanforge.safety.checker import ContentChecker, check_frames
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import JobContext, TaskError

# keys in predictions.result besides NSFW (one boolean per output: has_nsfw_contents)
NSFW_SCORES = "nsfw_scores"  # one score per output: the highest of its sampled frames
CHECKER = "content_checker"


def screen_input(ctx: JobContext, checker: ContentChecker | None, image: Image.Image) -> None:
    if checker is None or not ctx.settings.nsfw_check_input:
        return
    frame = np.asarray(image.convert("RGB"), dtype=np.uint8)[np.newaxis]
    verdict = check_frames(checker, frame, 1, ctx.settings.nsfw_threshold)
    ctx.remember({"input_nsfw": verdict.flagged, "input_nsfw_score": round(verdict.score, 6)})
    if not verdict.flagged:
        return
    if ctx.settings.nsfw_policy == "block":
        raise TaskError(
            ErrorCode.CONTENT_MODERATION,
            f"content moderation: the input image was flagged by the {checker.name} checker",
        )
    ctx.progress.log(f"the input image was flagged by the {checker.name} checker")


def screen_output(
    ctx: JobContext, checker: ContentChecker | None, frames: np.ndarray, encoded: Path
) -> dict[str, Any]:
    """The result facts for one output video (empty without a checker). Under `block` a flagged
    video is deleted before it reaches storage and the job fails with 1200."""
    if checker is None:
        return {}
    verdict = check_frames(checker, frames, ctx.settings.nsfw_frames, ctx.settings.nsfw_threshold)
    facts = {NSFW: [verdict.flagged], NSFW_SCORES: [round(verdict.score, 6)], CHECKER: checker.name}
    if verdict.flagged and ctx.settings.nsfw_policy == "block":
        encoded.unlink(missing_ok=True)
        ctx.remember(facts)
        raise TaskError(
            ErrorCode.CONTENT_MODERATION,
            f"content moderation: the output was flagged by the {checker.name} checker and withheld",
        )
    return facts
