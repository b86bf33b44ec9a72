"""Reading LoRA files: each format detected from its keys and converted to diffusers' names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.loaders.lora_conversion_utils import (
    _convert_musubi_wan_lora_to_diffusers,
    _convert_non_diffusers_wan_lora_to_diffusers,
)

from tests.engine.lora_files import (
    ALPHA,
    RANK,
    random_lora,
    to_musubi,
    write_comfy_ab,
    write_comfy_down_up,
    write_diffusers,
    write_musubi,
    write_tensors,
    write_wanforge,
)
from wanforge.engine.lora_formats import parse_lora, read_lora
from wanforge.engine.loras import LoraError
from wanforge.training.export import to_wan_state_dict


@pytest.fixture(scope="module")
def lora() -> dict[str, torch.Tensor]:
    return random_lora(7)


def folded(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What every format converts to: peft names with alpha / rank folded into A."""
    return {k: v * (ALPHA / RANK) if ".lora_A." in k else v for k, v in lora.items()}


@pytest.mark.parametrize(
    ("writer", "expected_format"),
    [
        (write_wanforge, "wanforge"),
        (write_diffusers, "diffusers"),
        (write_comfy_ab, "comfy"),
        (write_comfy_down_up, "comfy"),
        (write_musubi, "musubi"),
    ],
)
def test_every_format_reads_to_the_same_diffusers_weights(
    tmp_path: Path, lora: dict[str, torch.Tensor], writer: object, expected_format: str
) -> None:
    path = writer(lora, tmp_path / "x.safetensors")  # type: ignore[operator]
    parsed = read_lora(path, "x.safetensors")
    assert parsed.format == expected_format
    assert parsed.unknown == [] and parsed.deltas == {}
    expected = folded(lora)
    assert set(parsed.lora) == set(expected)
    for key, value in expected.items():
        assert torch.equal(parsed.lora[key], value), key


def test_comfy_keys_without_the_diffusion_model_prefix_are_read_too(
    tmp_path: Path, lora: dict[str, torch.Tensor]
) -> None:
    parsed = read_lora(write_comfy_down_up(lora, tmp_path / "bare.safetensors", prefix=""), "bare")
    assert parsed.format == "comfy"
    assert set(parsed.lora) == set(lora)


def test_musubi_conversion_equals_diffusers_own_musubi_converter(lora: dict[str, torch.Tensor]) -> None:
    ours = parse_lora(to_musubi(lora), {}, "m").lora
    theirs = _convert_musubi_wan_lora_to_diffusers(to_musubi(lora))
    assert {f"transformer.{k}" for k in ours} == set(theirs)
    for key, value in ours.items():
        assert torch.equal(value, theirs[f"transformer.{key}"])


def test_an_attention_only_musubi_file_converts_where_diffusers_musubi_converter_fails(
    lora: dict[str, torch.Tensor],
) -> None:
    attention = {k: v for k, v in to_musubi(lora).items() if "_ffn_" not in k}
    with pytest.raises(KeyError):  # why musubi files go through diffusers' Wan converter instead
        _convert_musubi_wan_lora_to_diffusers(dict(attention))
    parsed = parse_lora(attention, {}, "attn-only")
    assert set(parsed.lora) == {k for k in lora if ".ffn." not in k}


def test_wan_conversion_is_diffusers_own(lora: dict[str, torch.Tensor]) -> None:
    wan = to_wan_state_dict(lora, ALPHA, dtype=torch.float32)
    theirs = _convert_non_diffusers_wan_lora_to_diffusers(dict(wan))
    ours = parse_lora(wan, {}, "w").lora
    assert {f"transformer.{k}": v for k, v in ours.items()}.keys() == theirs.keys()
    assert all(torch.equal(v, theirs[f"transformer.{k}"]) for k, v in ours.items())


def test_lightx2v_deltas_are_renamed_to_the_base_parameters_they_add_to() -> None:
    tensors = {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.ones(2, 24),
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.ones(24, 2),
        "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(2.0),
        "diffusion_model.blocks.0.self_attn.q.diff_b": torch.full((24,), 0.1),
        "diffusion_model.blocks.0.self_attn.norm_q.diff": torch.full((24,), 0.2),
        "diffusion_model.blocks.0.norm3.diff": torch.full((24,), 0.3),
        "diffusion_model.blocks.0.norm3.diff_b": torch.full((24,), 0.4),
        "diffusion_model.blocks.1.diff_m": torch.full((1, 6, 24), 0.5),
        "diffusion_model.head.head.diff_b": torch.full((64,), 0.6),
        "diffusion_model.blocks.1.ffn.2.diff": torch.full((24, 32), 0.7),
    }
    parsed = parse_lora(tensors, {}, "lightning")
    assert parsed.format == "lightx2v"
    assert set(parsed.lora) == {"blocks.0.attn1.to_q.lora_A.weight", "blocks.0.attn1.to_q.lora_B.weight"}
    values = {k: float(v.flatten()[0]) for k, v in parsed.deltas.items()}
    assert values == pytest.approx(
        {
            "blocks.0.attn1.to_q.bias": 0.1,
            "blocks.0.attn1.norm_q.weight": 0.2,
            "blocks.0.norm2.weight": 0.3,  # Wan's norm3 (cross-attention) is diffusers' norm2
            "blocks.0.norm2.bias": 0.4,
            "blocks.1.scale_shift_table": 0.5,
            "proj_out.bias": 0.6,
            "blocks.1.ffn.net.2.weight": 0.7,
        }
    )


def test_unknown_and_half_pairs_are_listed_as_unknown(lora: dict[str, torch.Tensor]) -> None:
    wan = to_wan_state_dict(lora, ALPHA, dtype=torch.float32)
    wan.pop("diffusion_model.blocks.1.ffn.2.lora_B.weight")  # a lonely lora_A
    wan["diffusion_model.blocks.0.self_attn.dora_scale"] = torch.ones(3)
    wan["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = torch.ones(2, 3)
    parsed = parse_lora(wan, {}, "odd")
    assert parsed.unknown == [
        "diffusion_model.blocks.0.self_attn.dora_scale",
        "diffusion_model.blocks.1.ffn.2.alpha",
        "diffusion_model.blocks.1.ffn.2.lora_A.weight",
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
    ]
    assert "blocks.1.ffn.net.2.lora_A.weight" not in parsed.lora
    assert "blocks.1.ffn.net.0.proj.lora_A.weight" in parsed.lora


def test_a_file_that_is_not_safetensors_is_a_lora_error_without_the_path(tmp_path: Path) -> None:
    path = tmp_path / "secret-dir" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(LoraError) as caught:
        read_lora(path, "my-lora.safetensors")
    assert str(caught.value) == "my-lora.safetensors is not a readable .safetensors file"


def test_an_empty_safetensors_file_has_format_unknown(tmp_path: Path) -> None:
    parsed = read_lora(write_tensors({}, tmp_path / "empty.safetensors"), "empty")
    assert (parsed.format, parsed.lora, parsed.deltas, parsed.keys) == ("unknown", {}, {}, [])
