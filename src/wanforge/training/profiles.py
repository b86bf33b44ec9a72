"""Training profiles: how each served model is trained (bucket area, window length, checkpoints).

The engine's `ModelProfile` (engine/profiles.py) holds how a model *samples*; this holds how the
trainer prepares data for it and how often it checkpoints. Both are keyed by the same profile
name, so `training_profile(loaded.profile.name)` pairs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B


@dataclass(frozen=True)
class TrainingProfile:
    """``area``: bucket pixel area as (height, width); ``frames``: frames per window (4k+1);
    ``checkpoint_every``: optimizer steps between checkpoints."""

    area: tuple[int, int] = (480, 832)
    frames: int = 81
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.frames < 5 or (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 and >= 5, got {self.frames}")
        if any(side < 16 or side % 16 for side in self.area):
            raise ValueError(f"area sides must be multiples of 16, got {self.area}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")


TRAINING_PROFILES: MappingProxyType[str, TrainingProfile] = MappingProxyType(
    {
        # 33-frame windows (2 s at 16 fps) at the served 480p area: a motion fits in them, as in
        # peers' Wan LoRA setups (musubi-tuner's 17/33/65 frame lists, diffusion-pipe's 33-frame
        # buckets, ai-toolkit's 41 frames), at 30% of the forward FLOPs of 81 frames (docs/training.md)
        WAN22_I2V_A14B.name: TrainingProfile(area=(480, 832), frames=33),
        DEMO.name: TrainingProfile(area=(32, 48), frames=17, checkpoint_every=10),
    }
)


def training_profile(name: str) -> TrainingProfile:
    try:
        return TRAINING_PROFILES[name]
    except KeyError:
        known = sorted(TRAINING_PROFILES)
        raise ValueError(f"no training profile for {name!r}; expected one of {known}") from None
