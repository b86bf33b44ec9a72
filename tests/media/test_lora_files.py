"""`check_safetensors`: valid files whose header length begins like a pickle or a ZIP are accepted
(the safetensors library decides validity; the first bytes only name what a refused file is), and
hostile headers are a clear refusal, never a crash."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from wanforge.media.lora_files import CONVERT_HINT, LoraFileError, check_safetensors


def valid_file(path: Path, header_length: int) -> Path:
    """A valid safetensors file (one float32 tensor) whose JSON header is padded with spaces, as
    the format allows, to exactly ``header_length`` bytes."""
    data = np.arange(8, dtype=np.float32).tobytes()
    header = json.dumps({"t": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, len(data)]}}).encode()
    assert len(header) <= header_length
    header += b" " * (header_length - len(header))
    path.write_bytes(header_length.to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize(
    "length",
    [
        0x280,  # 80 02 ..: the first two bytes of a protocol-2 pickle
        0x380,  # 80 03 ..
        0x480,  # 80 04 ..
        0x4B50,  # "PK": the first two bytes of torch.save's ZIP
    ],
)
def test_a_valid_file_whose_length_looks_like_a_pickle_or_zip_is_accepted(
    tmp_path: Path, length: int
) -> None:
    path = valid_file(tmp_path / "x.safetensors", length)
    assert path.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"PK")
    with safe_open(str(path), framework="numpy") as f:  # the library agrees it is valid
        assert list(f.keys()) == ["t"]
    assert check_safetensors(path, path.stat().st_size) == 1


def test_the_trainers_own_output_whose_header_length_begins_with_0x80_is_accepted(tmp_path: Path) -> None:
    """The case a user met (a 73-character trigger word on the real model): the trainer's export
    whose header length began with 0x80. The trigger word, in the metadata, moves the length."""
    from tests.engine.lora_files import ALPHA, RANK, random_lora
    from wanforge.training.export import LoraInfo, export_lora

    lora = random_lora(1)
    for width in range(1, 300):  # headers are padded to 8 bytes: 32 lengths mod 256 in this range
        trigger = "p" * width
        info = LoraInfo("high_noise", trigger, RANK, ALPHA, 5, 1e-4, (0.0, 1.0), "wanforge-demo")
        path = export_lora(lora, tmp_path / f"{width}.safetensors", info, dtype=torch.float32)
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no trigger word length gave a header length beginning with 0x80")
    with safe_open(str(path), framework="numpy") as f:
        tensors = len(list(f.keys()))  # A and B per layer, and the alphas
    assert tensors > len(lora)
    assert check_safetensors(path, path.stat().st_size) == tensors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            pickle.dumps({"w": [1.0] * 64}, protocol=2),
            f"the file is a PyTorch pickle, not safetensors; {CONVERT_HINT}",
        ),
        (
            pickle.dumps({"w": [1.0] * 64}, protocol=4),
            f"the file is a PyTorch pickle, not safetensors; {CONVERT_HINT}",
        ),
        (b"\x00" * 3, "the file is not a safetensors file (3 bytes is too short)"),
        (
            (2**40).to_bytes(8, "little") + b"{}",
            "the file is not a safetensors file (its first 8 bytes are not a header length)",
        ),
    ],
)
def test_what_a_refused_file_is_is_named(tmp_path: Path, body: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(body)
    with pytest.raises(LoraFileError) as info:
        check_safetensors(path, len(body))
    assert str(info.value) == message


def test_a_torch_save_zip_is_named_a_pickle_and_never_opened(tmp_path: Path) -> None:
    path = tmp_path / "lora.safetensors"
    torch.save({"w": torch.ones(4)}, path)
    with pytest.raises(LoraFileError, match="the file is a PyTorch pickle, not safetensors"):
        check_safetensors(path, path.stat().st_size)


def test_a_deeply_nested_header_is_corrupt_not_a_recursion_error(tmp_path: Path) -> None:
    header = b'{"t": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(LoraFileError) as info:
        check_safetensors(path, path.stat().st_size)
    assert str(info.value).startswith("the safetensors file is corrupt (")
