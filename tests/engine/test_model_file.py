"""The model file (engine/model_file.py): read and checked without torch, in the settings too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from wanforge.config import Settings
from wanforge.engine.model_file import ModelFileError, is_model_file, read_model_file


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def pieces(tmp_path: Path) -> Path:
    for name in ("high.safetensors", "low.gguf", "umt5.safetensors", "vae.pth"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "Wan-Diffusers").mkdir()
    return tmp_path


def test_paths_are_relative_to_the_file(pieces: Path) -> None:
    text = 'high_noise = "high.safetensors"\nlow_noise = "low.gguf"\ntext_encoder = "umt5.safetensors"\n'
    text += f'vae = "{pieces / "vae.pth"}"\ntokenizer = "tokenizer"\n'
    spec = read_model_file(write(pieces / "wan.toml", text))
    assert (spec.high_noise, spec.low_noise) == (pieces / "high.safetensors", pieces / "low.gguf")
    assert (spec.vae, spec.tokenizer, spec.diffusers) == (pieces / "vae.pth", pieces / "tokenizer", None)


def test_pieces_not_named_come_from_a_diffusers_directory(pieces: Path) -> None:
    spec = read_model_file(
        write(pieces / "wan.toml", 'low_noise = "low.gguf"\ndiffusers = "Wan-Diffusers"\n')
    )
    assert (spec.high_noise, spec.low_noise, spec.diffusers) == (
        None,
        pieces / "low.gguf",
        pieces / "Wan-Diffusers",
    )


def test_missing_pieces_are_named(pieces: Path) -> None:
    path = write(pieces / "wan.toml", 'high_noise = "high.safetensors"\nlow_noise = "low.gguf"\n')
    with pytest.raises(
        ModelFileError, match="no text_encoder, vae, tokenizer named and no diffusers directory"
    ):
        read_model_file(path)


def test_every_bad_entry_is_named_at_once(pieces: Path) -> None:
    text = 'high_noise = "nope.safetensors"\nlow_noise = "tokenizer"\nvae = 3\ndiffusers = "vae.pth"\n'
    with pytest.raises(ModelFileError) as err:
        read_model_file(write(pieces / "wan.toml", text))
    message = str(err.value)
    assert "high_noise = 'nope.safetensors'" in message and "does not exist" in message
    assert "low_noise = 'tokenizer'" in message and "is a directory" in message
    assert "vae must be a path" in message
    assert "diffusers = 'vae.pth'" in message and "is not a directory" in message


def test_unknown_entries_and_bad_toml(pieces: Path) -> None:
    with pytest.raises(ModelFileError, match=r"unknown entries \['high'\]"):
        read_model_file(write(pieces / "a.toml", 'high = "high.safetensors"\n'))
    with pytest.raises(ModelFileError, match="not readable TOML"):
        read_model_file(write(pieces / "b.toml", "high_noise = \n"))
    with pytest.raises(ModelFileError, match="does not exist"):
        read_model_file(pieces / "c.toml")


def test_only_toml_files_are_model_files(pieces: Path) -> None:
    assert is_model_file(pieces / "wan.toml")
    assert not is_model_file(pieces / "high.safetensors")
    assert not is_model_file(pieces / "Wan-Diffusers")


def test_settings_refuse_a_bad_model_file(pieces: Path) -> None:
    with pytest.raises(ValidationError, match="no low_noise, text_encoder, vae, tokenizer named"):
        Settings(model=str(write(pieces / "wan.toml", 'high_noise = "high.safetensors"\n')))
    assert Settings(model="demo").model == "demo"
    # where the file is not (an API-only host), the worker that loads it reports it
    assert Settings(model=str(pieces / "elsewhere.toml")).model == str(pieces / "elsewhere.toml")
    assert Settings(model=str(pieces / "Wan-Diffusers")).model == str(pieces / "Wan-Diffusers")


def test_settings_check_a_model_file_without_torch(pieces: Path) -> None:
    good = write(pieces / "wan.toml", f'low_noise = "low.gguf"\ndiffusers = "{pieces / "Wan-Diffusers"}"\n')
    code = (
        "import sys\n"
        "from wanforge.config import Settings\n"
        f"Settings(model={str(good)!r})\n"
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
