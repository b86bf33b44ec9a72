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
from wanforge.media.lora_files import LORA_PATH_MAX_CHARS, check_lora_path

MEDIA_URL_HINT = "must be an http(s) URL, an upload URL of this server (/files/...) or a data: URI"
# The same rule as `check_media_url`, in the OpenAPI document (documentation only: the validator
# keeps its own messages). Clients and the schema fuzz test generate URLs that can be accepted.
MEDIA_URL_SCHEMA: dict[str, Any] = {
    "pattern": r"^\s*([dD][aA][tT][aA]:|[hH][tT][tT][pP][sS]?://\S|/files/)",
    "examples": ["https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo="],
}
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
    scheme, sep, rest = lowered.partition("://")
    if sep and scheme in ("http", "https") and rest:
        return v
    if v.startswith("/files/"):
        return v
    raise ValueError(MEDIA_URL_HINT)


_NUMBERS: tuple[object, ...] = (int, float, int | None, float | None)


class WireInput(BaseModel):
    """A request body. JSON `true`/`false` is a boolean only: pydantic's lax mode would take it
    as 1/0 for a number field (a `seed` of `true`), and text as a number (`"scale": "1"`), which
    is never what a client meant: both are refused, naming the field. No text
    may carry a NUL character: PostgreSQL cannot store one, and no prompt, URL or name needs it."""

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: object, info: ValidationInfo) -> object:
        annotation = cls.model_fields[info.field_name].annotation if info.field_name is not None else None
        if isinstance(value, bool) and annotation is not None and annotation not in (bool, bool | None):
            raise ValueError("must not be a boolean")
        # lax parsing would take "1" for 1: a number sent as text is a client's mistake to name
        if isinstance(value, str) and annotation in _NUMBERS:
            raise ValueError("must be a number, not a string")
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


def seed_field() -> Any:
    return Field(
        default=-1,
        ge=-1,
        le=2147483647,
        description="The random seed to use for the generation. -1 means a random seed will be used.",
    )


class ImageToVideoInput(ModelInput):
    """What every image-to-video model takes first: the image, the prompt, the negative prompt."""

    image: str = Field(
        description="The image for generating the output: an http(s) URL (at most "
        f"{URL_MAX_CHARS} characters), an upload URL of this server (`/files/...`), or a data: URI.",
        min_length=1,
        json_schema_extra=MEDIA_URL_SCHEMA,
    )
    prompt: str = Field(
        description="The positive prompt for the generation.", min_length=1, max_length=PROMPT_MAX_CHARS
    )
    negative_prompt: str = Field(
        default="", description="The negative prompt for the generation.", max_length=PROMPT_MAX_CHARS
    )

    _image_url = field_validator("image")(check_media_url)


class I2VInput(ImageToVideoInput):
    """Alibaba Wan 2.2 I2V Plus: one image and a prompt to a 5-second video."""

    duration: Literal[5] = Field(default=5, description="The duration of the generated media in seconds.")
    enable_prompt_expansion: bool = Field(
        default=False, description="If set to true, the prompt optimizer will be enabled."
    )
    seed: int = seed_field()

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
        json_schema_extra=MEDIA_URL_SCHEMA,
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


MAX_LORAS_PER_LIST = 3
LORA_MAX_SCALE = 4.0


class LoraEntry(WireInput):
    """One LoRA of a request: where the .safetensors file is, and how strongly it applies."""

    model_config = ConfigDict(extra="forbid")  # a misspelt `scale` must not silently become 1.0

    path: str = Field(
        min_length=1,
        max_length=LORA_PATH_MAX_CHARS,
        description="The LoRA file (.safetensors only): an http(s) URL, a URL of this server's own "
        "files (`/files/...`: an upload or a trainer output), or the name of a file in the "
        "server's LoRA directory (`WANFORGE_LORA_DIR`).",
    )
    scale: float = Field(default=1.0, ge=0.0, le=LORA_MAX_SCALE, description="The LoRA's strength.")

    _path = field_validator("path")(check_lora_path)


LoraList = list[LoraEntry]


def _lora_list(applies_to: str) -> LoraList:
    return Field(
        default_factory=list,
        max_length=MAX_LORAS_PER_LIST,
        description=f"At most {MAX_LORAS_PER_LIST} LoRAs applied to {applies_to}.",
    )


class I2VLoraInput(ImageToVideoInput):
    """Wan 2.2 image-to-video with LoRAs: an image (and optionally a last frame) and a prompt to
    a 5- or 8-second video, with up to 3 LoRAs for both experts and 3 for each expert alone."""

    last_image: str | None = Field(
        default=None,
        min_length=1,
        description="The last frame of the video (first-last-frame generation); same forms as `image`.",
        json_schema_extra=MEDIA_URL_SCHEMA,
    )
    duration: Literal[5, 8] = Field(
        default=5, description="The duration of the generated media in seconds (81 or 129 frames at 16 fps)."
    )
    seed: int = seed_field()
    loras: LoraList = _lora_list("both experts (high-noise `transformer` and low-noise `transformer_2`)")
    high_noise_loras: LoraList = _lora_list("the high-noise expert (`transformer`) only")
    low_noise_loras: LoraList = _lora_list("the low-noise expert (`transformer_2`) only")

    @field_validator("last_image")
    @classmethod
    def _last_image_url(cls, value: str | None) -> str | None:
        return None if value is None else check_media_url(value)


class I2V480pLoraInput(I2VLoraInput):
    """Wan 2.2 image-to-video 480p with LoRAs."""


class I2V720pLoraInput(I2VLoraInput):
    """Wan 2.2 image-to-video 720p with LoRAs."""


class ImageToVideoLoraInput(I2VLoraInput):
    """Wan 2.2 image-to-video with LoRAs, at the `resolution` asked for."""

    resolution: Literal["480p", "720p"] = Field(default="480p", description="The resolution of the video.")


Sampling = Literal["standard", "ultra_fast"]  # as wanforge.engine.profiles.Sampling (no torch here)

ULTRA_FAST_HINT = (
    "is not enabled on this server: the ultra-fast models need the operator's distill LoRAs, "
    "set by WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA and WANFORGE_ULTRA_FAST_LOW_NOISE_LORA"
)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: TaskKind
    input_model: type[BaseModel]
    resolution: str | None = None
    summary: str = ""
    # "ultra_fast": the step-distilled 4-step schedule with the distill LoRAs (served only when
    # the operator configures them: see `served`)
    sampling: Sampling = "standard"


class I2VPlus480pInput(I2VInput):
    """Alibaba Wan 2.2 I2V Plus 480p: one image and a prompt to a 5-second 480p video."""


class I2VPlus720pInput(I2VInput):
    """Alibaba Wan 2.2 I2V Plus 720p: one image and a prompt to a 5-second 720p video."""


class I2VPlus1080pInput(I2VInput):
    """Alibaba Wan 2.2 I2V Plus 1080p: one image and a prompt to a 5-second 1080p (Full HD) video."""


class I2V480pUltraFastInput(I2VInput):
    """Wan 2.2 image-to-video 480p, ultra-fast (distilled 4 steps): one image and a prompt to a 5-second video."""


class I2V720pUltraFastInput(I2VInput):
    """Wan 2.2 image-to-video 720p, ultra-fast (distilled 4 steps): one image and a prompt to a 5-second video."""


class I2V480pLoraUltraFastInput(I2VLoraInput):
    """Wan 2.2 image-to-video 480p with LoRAs, ultra-fast (distilled 4 steps)."""


class I2V720pLoraUltraFastInput(I2VLoraInput):
    """Wan 2.2 image-to-video 720p with LoRAs, ultra-fast (distilled 4 steps)."""


_I2V_INPUTS: dict[str, type[I2VInput]] = {
    "480p": I2VPlus480pInput,
    "720p": I2VPlus720pInput,
    "1080p": I2VPlus1080pInput,
}


def _ultra_fast(resolution: str, input_model: type[BaseModel], lora: bool) -> ModelSpec:
    return ModelSpec(
        id=f"wavespeed-ai/wan-2.2/i2v-{resolution}{'-lora' if lora else ''}-ultra-fast",
        kind=TaskKind.GENERATE,
        input_model=input_model,
        resolution=resolution,
        summary=f"Wan 2.2 image-to-video{' with LoRAs' if lora else ''}, ultra-fast (distilled 4 steps), "
        f"{'5 or 8 s' if lora else '5 s'} at {resolution}",
        sampling="ultra_fast",
    )


def _i2v(resolution: str) -> ModelSpec:
    return ModelSpec(
        id=f"alibaba/wan-2.2/i2v-plus-{resolution}",
        kind=TaskKind.GENERATE,
        input_model=_I2V_INPUTS[resolution],
        resolution=resolution,
        summary=f"Wan 2.2 image-to-video, 5 s at {resolution}",
    )


def _i2v_lora(resolution: str, input_model: type[BaseModel]) -> ModelSpec:
    return ModelSpec(
        id=f"wavespeed-ai/wan-2.2/i2v-{resolution}-lora",
        kind=TaskKind.GENERATE,
        input_model=input_model,
        resolution=resolution,
        summary=f"Wan 2.2 image-to-video with LoRAs, 5 or 8 s at {resolution}",
    )


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        _i2v("480p"),
        _i2v("720p"),
        _i2v("1080p"),
        _i2v_lora("480p", I2V480pLoraInput),
        _i2v_lora("720p", I2V720pLoraInput),
        ModelSpec(
            id="wavespeed-ai/wan-2.2/image-to-video-lora",
            kind=TaskKind.GENERATE,
            input_model=ImageToVideoLoraInput,
            summary="Wan 2.2 image-to-video with LoRAs, 5 or 8 s at 480p or 720p (`resolution`)",
        ),
        _ultra_fast("480p", I2V480pUltraFastInput, lora=False),
        _ultra_fast("720p", I2V720pUltraFastInput, lora=False),
        _ultra_fast("480p", I2V480pLoraUltraFastInput, lora=True),
        _ultra_fast("720p", I2V720pLoraUltraFastInput, lora=True),
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


def served(spec: ModelSpec, settings: Settings) -> bool:
    """Whether this server offers ``spec``: the ultra-fast models only with their distill LoRAs."""
    return spec.sampling != "ultra_fast" or settings.ultra_fast_configured


def served_models(settings: Settings) -> list[str]:
    """The ids this server offers, sorted."""
    return sorted(spec.id for spec in MODELS.values() if served(spec, settings))


def generation_resolution(spec: ModelSpec, inp: BaseModel) -> str | None:
    """The resolution a generation job asks for: the model's own, or its input's `resolution`."""
    if spec.resolution is not None:
        return spec.resolution
    chosen = getattr(inp, "resolution", None)
    return chosen if isinstance(chosen, str) else None
