"""The model file: a small TOML file naming the checkpoint pieces a user already has.

```toml
high_noise = "wan2.2_i2v_high_noise_14B_fp16.safetensors"   # or _fp8_scaled, or a .gguf
low_noise = "wan2.2_i2v_low_noise_14B_fp16.safetensors"
text_encoder = "umt5_xxl_fp16.safetensors"                  # or models_t5_umt5-xxl-enc-bf16.pth
vae = "wan_2.1_vae.safetensors"                             # or Wan2.1_VAE.pth
tokenizer = "google/umt5-xxl"                               # a tokenizer directory
diffusers = "/models/Wan2.2-I2V-A14B-Diffusers"             # optional: everything not named above
```

Relative paths are relative to the model file. A piece not named comes from the ``diffusers``
directory. This module only reads and checks the file (no torch), so the settings of the HTTP
process can validate ``WANFORGE_MODEL`` without importing the engine.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

PIECES = ("high_noise", "low_noise", "text_encoder", "vae")
DIRECTORIES = ("tokenizer", "diffusers")
MODEL_FILE_SUFFIX = ".toml"


class ModelFileError(ValueError):
    """The model file cannot be read or names something that is not there."""


@dataclass(frozen=True)
class ModelFile:
    """What a model file names, as absolute paths (``None``: not named)."""

    path: Path
    high_noise: Path | None = None
    low_noise: Path | None = None
    text_encoder: Path | None = None
    vae: Path | None = None
    tokenizer: Path | None = None
    diffusers: Path | None = None

    def piece(self, name: str) -> Path | None:
        value: Path | None = getattr(self, name)
        return value


def is_model_file(path: Path) -> bool:
    """Whether ``--model`` names a model file (a ``.toml`` file) rather than a directory."""
    return path.suffix.lower() == MODEL_FILE_SUFFIX and not path.is_dir()


def read_model_file(path: Path) -> ModelFile:
    """Parse and check ``path``: every named path exists, pieces are files, directories are
    directories, and each of the four pieces and the tokenizer is named or left to a
    ``diffusers`` directory. Every problem is in the one error."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFileError(f"model file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelFileError(f"model file {path} is not readable TOML: {exc}") from exc
    unknown = sorted(set(data) - set(PIECES) - set(DIRECTORIES))
    if unknown:
        raise ModelFileError(
            f"model file {path}: unknown entries {unknown}; expected {[*PIECES, *DIRECTORIES]}"
        )
    base = path.parent
    problems: list[str] = []
    found: dict[str, Path] = {}
    for name in (*PIECES, *DIRECTORIES):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} must be a path (a non-empty string)")
            continue
        where = (base / Path(value).expanduser()).resolve()
        if not where.exists():
            problems.append(f"{name} = {value!r}: {where} does not exist")
        elif name in PIECES and where.is_dir():
            problems.append(f"{name} = {value!r}: {where} is a directory, expected a weights file")
        elif name in DIRECTORIES and not where.is_dir():
            problems.append(f"{name} = {value!r}: {where} is not a directory")
        else:
            found[name] = where
    if "diffusers" not in data:
        missing = [name for name in (*PIECES, "tokenizer") if name not in data]
        if missing:
            problems.append(
                f"no {', '.join(missing)} named and no diffusers directory to take "
                f"{'it' if len(missing) == 1 else 'them'} from"
            )
    if problems:
        raise ModelFileError(f"model file {path}: " + "; ".join(problems))
    return ModelFile(path=path, **found)
