"""Model profiles: the sampling defaults and sizing strategy of each served model.

How a model is *trained* (bucket area, window length, checkpoint period) is not here: that is
`wanforge.training.profiles`, keyed by the same profile name.

A profile is a frozen dataclass; adjust one with ``dataclasses.replace(profile, steps=20)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from wanforge.engine.sizing import get_preset

Strategy1080p = Literal["upscale", "native"]
# "standard": the profile's own steps, UniPC and CFG; "ultra_fast": its step-distilled schedule
# (the model runs with the operator's distill LoRAs; see DistilledSchedule)
Sampling = Literal["standard", "ultra_fast"]

# The default negative prompt of the reference Wan 2.x code (``shared_config.sample_neg_prompt``),
# used when a request leaves its negative prompt empty.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

DEMO_AREA = 64 * 112


@dataclass(frozen=True)
class DistilledSchedule:
    """The 4-step schedule of the step-distilled Wan 2.2 I2V LoRAs (LightX2V, Lightning).

    ``step_list`` is the distillers' ``denoising_step_list``: timesteps on the *unshifted*
    0..1000 axis. Each becomes a sigma ``x = t / 1000`` that the flow shift maps to
    ``shift * x / (1 + (shift - 1) * x)``, so with shift 5.0 the experts see the timesteps
    1000, 937.5, 833.3 and 625 and the I2V boundary (0.9 * 1000) gives the first two to the
    high-noise expert and the last two to the low-noise one (LightX2V's ``boundary_step_index``
    2). Each step is a plain flow-matching Euler step to the next sigma (0 after the last), and
    guidance 1 means no unconditional pass (diffusers runs CFG only when ``guidance_scale > 1``).
    Reference: LightX2V ``configs/wan22/wan_moe_i2v_distill.json`` and its
    ``Wan22StepDistillScheduler``.
    """

    step_list: tuple[int, ...] = (1000, 750, 500, 250)
    shift: float = 5.0
    guidance_scale: float = 1.0
    guidance_scale_2: float = 1.0

    def __post_init__(self) -> None:
        steps = self.step_list
        if (
            not steps
            or any(not 0 < t <= 1000 for t in steps)
            or list(steps) != sorted(set(steps), reverse=True)
        ):
            raise ValueError(f"step_list must be decreasing timesteps in 1..1000, got {list(steps)}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")

    def sigmas(self, num_train_timesteps: int = 1000) -> tuple[float, ...]:
        """The unshifted sigmas the scheduler is given (it applies ``shift`` itself)."""
        return tuple(t / num_train_timesteps for t in self.step_list)


@dataclass(frozen=True)
class ModelProfile:
    """Sampling defaults and sizing strategy of one model.

    ``generation_area``: ``None`` denoises at the preset's own size; a number denoises every
    preset at that small pixel area (keeping the aspect ratio) and upscales to the output size.
    ``strategy_1080p``: ``"upscale"`` generates 1080p at 720p and upscales; ``"native"``
    denoises at 1080p directly.
    ``ultra_fast``: the step-distilled schedule the ultra-fast models run (with distill LoRAs).
    ``cpu_threads``: torch intra-op threads while generating on a CPU (``None``: torch's own
    setting). The demo uses 1: its tensors are too small to gain from more, and on a busy
    machine OpenMP threads spinning on each other make it 10-20x slower.
    """

    name: str
    steps: int = 40
    guidance_scale: float = 3.5
    guidance_scale_2: float = 3.5
    flow_shift: float = 5.0
    boundary_ratio: float = 0.9
    fps: int = 16
    strategy_1080p: Strategy1080p = "upscale"
    generation_area: int | None = None
    default_negative_prompt: str = WAN_NEGATIVE_PROMPT
    max_sequence_length: int = 512
    cpu_threads: int | None = None
    ultra_fast: DistilledSchedule = DistilledSchedule()

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 < self.boundary_ratio < 1.0:
            raise ValueError(f"boundary_ratio must be in (0, 1), got {self.boundary_ratio}")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1, got {self.fps}")
        if self.strategy_1080p not in ("upscale", "native"):
            raise ValueError(f"strategy_1080p must be 'upscale' or 'native', got {self.strategy_1080p!r}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {self.cpu_threads}")
        if self.generation_area is not None and self.generation_area < 16 * 16:
            raise ValueError(f"generation_area must be >= 256 pixels, got {self.generation_area}")

    def num_frames(self, duration_s: int) -> int:
        """Frames for ``duration_s`` seconds: ``fps * duration_s + 1`` (4k+1: 81 for 5 s at 16 fps)."""
        if duration_s < 1:
            raise ValueError(f"duration_s must be >= 1, got {duration_s}")
        frames = self.fps * duration_s + 1
        return (frames - 1) // 4 * 4 + 1

    def generation_resolution(self, resolution: str) -> str:
        """The preset the model denoises at for a requested ``resolution``."""
        get_preset(resolution)
        if resolution == "1080p" and self.strategy_1080p == "upscale":
            return "720p"
        return resolution

    def flow_shift_for(self, generation_resolution: str) -> float:
        """The scheduler's flow shift at the preset the model denoises at: the same at every size.
        Wan 2.2 I2V-A14B samples with ``sample_shift = 5.0`` everywhere (``wan/configs/wan_i2v_A14B.py``;
        its ``generate.py`` takes ``cfg.sample_shift``); 3.0 at 480p was a Wan 2.1 rule. The trainer
        samples its timesteps with the same shift, so a LoRA is served on the schedule it learned."""
        get_preset(generation_resolution)
        return self.flow_shift

    def negative_prompt_for(self, negative_prompt: str) -> str:
        return negative_prompt if negative_prompt.strip() else self.default_negative_prompt


WAN22_I2V_A14B = ModelProfile(name="wan2.2-i2v-a14b")
DEMO = ModelProfile(
    name="demo",
    generation_area=DEMO_AREA,
    cpu_threads=1,
)

PROFILES: MappingProxyType[str, ModelProfile] = MappingProxyType(
    {WAN22_I2V_A14B.name: WAN22_I2V_A14B, DEMO.name: DEMO}
)


def get_profile(name: str) -> ModelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown model profile {name!r}; expected one of {sorted(PROFILES)}") from None
