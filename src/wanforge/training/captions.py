"""Captions for training: the trigger word, and caption dropout.

Every training caption contains the trigger word, so the LoRA learns to tie its subject to it:
a caption that lacks it (a case-insensitive, whole-word check) becomes ``"{trigger}, {caption}"``,
and a missing or empty caption becomes the trigger word alone. Caption dropout (training on an
empty prompt now and then) is applied by the trainer at each step with :func:`choose_caption`.
"""

from __future__ import annotations

import re
from typing import Protocol

__all__ = ["apply_trigger", "choose_caption", "has_trigger", "normalize_caption"]


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in [0, 1): ``random.Random``, ``numpy.random.Generator``."""

    def random(self) -> float: ...


def normalize_caption(text: str | None) -> str:
    """Collapse runs of whitespace (newlines included) to single spaces and strip the ends."""
    return " ".join((text or "").split())


def has_trigger(caption: str, trigger: str) -> bool:
    """Whether ``trigger`` occurs in ``caption`` as a whole word, ignoring case.

    "Whole word" means not glued to a letter, digit or underscore on either side, so
    ``p3r5on`` is found in ``"a photo of P3R5ON, smiling"`` but not in ``"p3r5ons"``.
    """
    trigger = normalize_caption(trigger)
    if not trigger:
        return True
    pattern = rf"(?<!\w){re.escape(trigger)}(?!\w)"
    return re.search(pattern, normalize_caption(caption), flags=re.IGNORECASE) is not None


def apply_trigger(caption: str | None, trigger: str) -> str:
    """The training caption: the trigger word prepended when absent, or alone when no caption."""
    text = normalize_caption(caption)
    word = normalize_caption(trigger)
    if not word:
        return text
    if not text:
        return word
    if has_trigger(text, word):
        return text
    return f"{word}, {text}"


def choose_caption(caption: str, rng: RandomSource, dropout: float) -> str:
    """``caption``, or ``""`` with probability ``dropout``.

    Draws once from ``rng`` per call when ``dropout > 0`` and never when it is 0, so turning
    dropout off leaves the trainer's random stream untouched.
    """
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"caption dropout must be between 0 and 1, got {dropout}")
    if dropout == 0.0:
        return caption
    return "" if rng.random() < dropout else caption
