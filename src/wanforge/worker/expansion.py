"""The prompt a generate job runs with: the user's, or its expansion when asked for.

On any failure the original prompt is used and the reason goes to the prediction's log, as the
reference Wan code falls back. A successful expansion is remembered, so a re-run after a crash
generates from the same prompt.
"""

from __future__ import annotations

import logging

from PIL import Image

from wanforge.catalog import I2VInput
from wanforge.predictions import EXPANDED_PROMPT
from wanforge.prompting.expand import ExpansionConfig, ExpansionFailed, expand_prompt
from wanforge.worker.context import JobContext

log = logging.getLogger("wanforge.worker")


def prompt_for(ctx: JobContext, inp: I2VInput, image: Image.Image) -> str:
    if not inp.enable_prompt_expansion:
        return inp.prompt
    stored = (ctx.prediction.result or {}).get(EXPANDED_PROMPT)
    if isinstance(stored, str) and stored:
        return stored
    config = ExpansionConfig.from_settings(ctx.settings)
    if config is None:  # the API that took the job had an endpoint; this worker has none
        ctx.progress.log(
            "prompt expansion failed: no endpoint on this worker (set WANFORGE_PROMPT_EXPANSION_URL "
            "and WANFORGE_PROMPT_EXPANSION_MODEL); used the original prompt"
        )
        return inp.prompt
    ctx.progress.report("expanding_prompt", 0, 1, force=True)
    try:
        expansion = expand_prompt(config, inp.prompt, image, should_stop=ctx.lease.should_stop)
    except ExpansionFailed as exc:
        log.warning("job %s: prompt expansion failed: %s", ctx.prediction.id, exc)
        ctx.progress.log(f"prompt expansion failed: {exc}; used the original prompt")
        return inp.prompt
    ctx.remember({EXPANDED_PROMPT: expansion.prompt})
    ctx.progress.log(f"prompt expanded by {config.model} ({expansion.tries} {_tries(expansion.tries)})")
    return expansion.prompt


def _tries(n: int) -> str:
    return "try" if n == 1 else "tries"
