"""The models this server offers: id -> input schema, task kind, resolution, defaults and bounds.

The input models are the wire contract of each model's request body (WaveSpeed v3). They are
pydantic models so the API validates them and documents them in the OpenAPI schema, and the
worker re-reads the stored input with the same class.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from wanforge.config import Settings

MEDIA_URL_HINT = "must be an http(s) URL, an upload URL of this server (/files/...) or a data: URI"
# The umT5 encoder reads 512 tokens (about 2,000 characters of English); the rest is cut off
# there. 4,000 characters leaves room for other scripts while a prompt stays cheap to store,
# poll and tokenize (Alibaba's own Wan API takes 800).
PROMPT_MAX_CHARS = 4000
# URLs (not data: URIs, which the JSON body cap bounds) are stored with the job and re-read often.
URL_MAX_CHARS = 8192
# Validation context of an input the API already took: settings-dependent checks are skipped, so a
# worker re-reads a stored job whatever its own configuration.
STORED_INPUT: dict[str, Any] = {"stored": True}
PROMPT_EXPANSION_HINT = (
    "prompt expansion is not configured on this server: the operator sets WANFORGE_PROMPT_EXPANSION_URL "
    "(an OpenAI-compatible endpoint up to /v1) and WANFORGE_PROMPT_EXPANSION_MODEL; or send false"
)


def check_media_url(value: str) -> str:
    """A cheap shape check at submission; the worker does the real (safe) fetch."""
    v = value.strip()
    lowered = v.lower()
    if lowered.startswith("data:"):
        return v
    if len(v) > URL_MAX_CHARS:
        raise ValueError(f"a URL may have at most {URL_MAX_CHARS} characters")
    if lowered.startswith(("http://", "https://")) and len(v) > len("https://"):
        return v
    if v.startswith("/files/"):
        return v
    raise ValueError(MEDIA_URL_HINT)


class WireInput(BaseModel):
    """A request body. JSON `true`/`false` is a boolean only: pydantic's lax mode would take it
    as 1/0 for a number field (a `seed` of `true`), which is never what a client meant. No text
    may carry a NUL character: PostgreSQL cannot store one, and no prompt, URL or name needs it."""

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation is not bool and annotation is not (bool | None):
                raise ValueError("must not be a boolean")
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("must not contain NUL characters")
        return value


class ModelInput(WireInput):
    """Fields every model accepts besides its own inputs."""

    model_config = ConfigDict(extra="ignore")

    enable_sync_mode: bool = Field(
        default=False,
        description="Wait for the result in the submit request (best effort; falls back to polling).",
    )


class TaskKind(StrEnum):
    GENERATE = "generate"
    TRAIN = "train"


class I2VInput(ModelInput):
    """Alibaba Wan 2.2 I2V Plus: one image and a prompt to a 5-second video."""

    image: str = Field(
        description="The image for generating the output: an http(s) URL (at most "
        f"{URL_MAX_CHARS} characters), an upload URL of this server (`/files/...`), or a data: URI.",
        min_length=1,
    )
    prompt: str = Field(
        description="The positive prompt for the generation.", min_length=1, max_length=PROMPT_MAX_CHARS
    )
    negative_prompt: str = Field(
        default="", description="The negative prompt for the generation.", max_length=PROMPT_MAX_CHARS
    )
    duration: Literal[5] = Field(default=5, description="The duration of the generated media in seconds.")
    enable_prompt_expansion: bool = Field(
        default=False, description="If set to true, the prompt optimizer will be enabled."
    )
    seed: int = Field(
        default=-1,
        ge=-1,
        le=2147483647,
        description="The random seed to use for the generation. -1 means a random seed will be used.",
    )

    _image_url = field_validator("image")(check_media_url)

    @field_validator("enable_prompt_expansion")
    @classmethod
    def _expansion_configured(cls, value: bool, info: ValidationInfo) -> bool:
        stored = bool((info.context or {}).get("stored"))
        # read from the environment only when asked for (about 1 ms); the API and its workers share it
        if value and not stored and not Settings().prompt_expansion_configured:
            raise ValueError(PROMPT_EXPANSION_HINT)
        return value


class LoraTrainerInput(ModelInput):
    """Wan 2.2 I2V LoRA trainer: a ZIP of videos (and same-name .txt captions) to two LoRAs."""

    data: str = Field(
        min_length=1,
        description="URL of a ZIP file containing videos, and optionally text files with captions that "
        "have the same name as the video they describe: an http(s) URL (at most "
        f"{URL_MAX_CHARS} characters), an upload URL of this server (`/files/...`), or a data: URI.",
    )
    trigger_word: str = Field(
        default="p3r5on",
        min_length=1,
        max_length=200,
        description="The phrase that will trigger the model to generate a video.",
    )
    steps: int = Field(default=100, ge=50, le=1500, description="Number of steps to train the LoRA on.")
    learning_rate: float = Field(default=0.0002, ge=0.0, le=1.0)
    lora_rank: int = Field(default=32, ge=1, le=128)

    _data_url = field_validator("data")(check_media_url)

    @field_validator("trigger_word")
    @classmethod
    def _trigger_word_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: TaskKind
    input_model: type[BaseModel]
    resolution: str | None = None
    summary: str = ""


class I2VPlus480pInput(I2VInput):
    """Alibaba Wan 2.2 I2V Plus 480p: one image and a prompt to a 5-second 480p video."""


class I2VPlus720pInput(I2VInput):
    """Alibaba Wan 2.2 I2V Plus 720p: one image and a prompt to a 5-second 720p video."""


class I2VPlus1080pInput(I2VInput):
    """Alibaba Wan 2.2 I2V Plus 1080p: one image and a prompt to a 5-second 1080p (Full HD) video."""


_I2V_INPUTS: dict[str, type[I2VInput]] = {
    "480p": I2VPlus480pInput,
    "720p": I2VPlus720pInput,
    "1080p": I2VPlus1080pInput,
}


def _i2v(resolution: str) -> ModelSpec:
    return ModelSpec(
        id=f"alibaba/wan-2.2/i2v-plus-{resolution}",
        kind=TaskKind.GENERATE,
        input_model=_I2V_INPUTS[resolution],
        resolution=resolution,
        summary=f"Wan 2.2 image-to-video, 5 s at {resolution}",
    )


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        _i2v("480p"),
        _i2v("720p"),
        _i2v("1080p"),
        ModelSpec(
            id="wavespeed-ai/wan-2.2-i2v-lora-trainer",
            kind=TaskKind.TRAIN,
            input_model=LoraTrainerInput,
            summary="Wan 2.2 I2V LoRA trainer: two LoRAs (high-noise and low-noise expert)",
        ),
    )
}


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id.strip("/"))
