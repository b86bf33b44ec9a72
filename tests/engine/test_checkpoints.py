"""Checkpoints in the layouts people have (engine/checkpoints.py): the tiny model written as
ComfyUI single files, fp8-scaled, GGUF Q8_0 and the official directory, loaded through
``load_pipeline`` and compared frame for frame with the same model loaded from a diffusers
directory; the key names against the reference code's; every wrong piece named."""

from __future__ import annotations

import shutil
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from tests.engine.checkpoint_files import (
    EXPERT,
    reference_pipeline,
    to_fp8_scaled,
    to_hf_t5,
    to_wan_expert,
    to_wan_t5,
    to_wan_vae,
    write_gguf_q8,
    write_model_file,
    write_official_layout,
)
from tests.engine.conftest import FAST_TEST_PROFILE, smooth_image
from tests.engine.lora_files import request
from wanforge.engine import wan_keys
from wanforge.engine.generate import Engine, GenerationRequest
from wanforge.engine.loading import LoadedModel, ModelLoadError, load_pipeline
from wanforge.engine.random_model import A14B_EXPERT, A14B_VAE, UMT5_XXL
from wanforge.training.lora import add_lora, lora_state_dict

REQUEST = GenerationRequest(smooth_image(48, 32, seed=3), "a cat walks", "", "480p", seed=5, duration_s=1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may download: every socket connection fails."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def fast(loaded: LoadedModel) -> LoadedModel:
    profile = replace(loaded.profile, **FAST_TEST_PROFILE, generation_area=48 * 32)  # type: ignore[arg-type]
    return replace(loaded, profile=profile)


def frames(model: Path) -> np.ndarray:
    out, _ = Engine(fast(load_pipeline(str(model)))).render(REQUEST)
    return np.asarray(out)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference model as a diffusers directory and as single files in Wan's names."""
    root = tmp_path_factory.mktemp("checkpoints")
    pipe = reference_pipeline()
    pipe.save_pretrained(root / "diffusers")
    prefixed = {wan_keys.COMFY_PREFIX + k: v for k, v in to_wan_expert(pipe.transformer).items()}
    save_file(prefixed, str(root / "wan2.2_i2v_high_noise_14B_fp32.safetensors"))
    save_file(to_wan_expert(pipe.transformer_2), str(root / "wan2.2_i2v_low_noise_14B_fp32.safetensors"))
    save_file(to_hf_t5(pipe.text_encoder), str(root / "umt5_xxl_fp32.safetensors"))
    save_file(to_wan_vae(pipe.vae), str(root / "wan_2.1_vae.safetensors"))
    pipe.tokenizer.save_pretrained(root / "tokenizer")
    return {
        "root": root,
        "diffusers": root / "diffusers",
        "high_noise": root / "wan2.2_i2v_high_noise_14B_fp32.safetensors",
        "low_noise": root / "wan2.2_i2v_low_noise_14B_fp32.safetensors",
        "text_encoder": root / "umt5_xxl_fp32.safetensors",
        "vae": root / "wan_2.1_vae.safetensors",
        "tokenizer": root / "tokenizer",
    }


@pytest.fixture(scope="module")
def reference(files: dict[str, Path]) -> np.ndarray:
    return frames(files["diffusers"])


def pieces(files: dict[str, Path], **changes: Path) -> dict[str, Path]:
    """Every piece as a file; the diffusers directory gives only the configs (a tiny expert's
    head count cannot be read off its tensors; without one, the A14B configs are used)."""
    names = ("high_noise", "low_noise", "text_encoder", "vae", "tokenizer", "diffusers")
    return {**{n: files[n] for n in names}, **changes}


# --- key names against the reference code's


def test_expert_key_names_convert_to_the_a14b_model() -> None:
    shapes = wan_keys.expert_shapes()
    converted = convert_wan_transformer_to_diffusers(
        {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    )
    with torch.device("meta"):
        model = WanTransformer3DModel(**A14B_EXPERT)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert len(shapes) == 15 + 40 * 27  # 1095 tensors per expert
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    fp8 = convert_wan_transformer_to_diffusers(
        {f"blocks.7.{n}.weight": 0 for n in wan_keys.EXPERT_FP8_LINEARS}
    )
    assert {k.removesuffix(".weight") for k in fp8} <= linears


def test_vae_key_names_convert_to_the_wan_vae() -> None:
    names = wan_keys.wan_vae_keys()
    converted = convert_wan_vae_to_diffusers(dict.fromkeys(names, 0))
    with torch.device("meta"):
        vae = AutoencoderKLWan(**A14B_VAE)
    assert sorted(converted) == sorted(vae.state_dict())
    # spot checks in the real file's own names
    assert {"decoder.upsamples.4.shortcut.weight", "decoder.upsamples.3.time_conv.weight"} <= set(names)
    assert {"encoder.downsamples.5.time_conv.weight", "decoder.upsamples.11.resample.1.weight"} <= set(names)
    assert "decoder.upsamples.11.time_conv.weight" not in names  # the last upsample is 2-D


def test_t5_key_names_are_umt5_xxl() -> None:
    with torch.device("meta"):
        encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
    assert sorted([*wan_keys.hf_t5_keys(), "encoder.embed_tokens.weight"]) == sorted(encoder.state_dict())
    assert len(wan_keys.wan_t5_keys()) == 2 + 24 * 10


# --- every layout generates the reference frames


def test_model_file_of_wan_named_single_files(files: dict[str, Path], reference: np.ndarray) -> None:
    model = write_model_file(files["root"] / "wan.toml", **pieces(files))
    assert np.abs(frames(model) - reference).max() <= 1e-4


def test_model_file_with_diffusers_named_expert_and_the_rest_from_diffusers(
    files: dict[str, Path], reference: np.ndarray, tmp_path: Path
) -> None:
    pipe = reference_pipeline()
    expert = tmp_path / "expert.safetensors"
    save_file({k: v.contiguous() for k, v in pipe.transformer.state_dict().items()}, str(expert))
    model = write_model_file(tmp_path / "m.toml", high_noise=expert, diffusers=files["diffusers"])
    assert np.abs(frames(model) - reference).max() <= 1e-4


def test_fp16_expert_files(files: dict[str, Path], reference: np.ndarray, tmp_path: Path) -> None:
    pipe = reference_pipeline()
    paths = {}
    for role, expert in (("high_noise", pipe.transformer), ("low_noise", pipe.transformer_2)):
        paths[role] = tmp_path / f"wan2.2_i2v_{role}_14B_fp16.safetensors"
        save_file({k: v.half() for k, v in to_wan_expert(expert).items()}, str(paths[role]))
    model = write_model_file(tmp_path / "m.toml", **pieces(files, **paths))
    diff = np.abs(frames(model) - reference).max()
    assert 0 < diff <= 0.005  # measured 5.3e-4 (float16 rounding of the weights; computed in float32)


def test_fp8_scaled_experts(files: dict[str, Path], reference: np.ndarray, tmp_path: Path) -> None:
    pipe = reference_pipeline()
    paths = {}
    for role, expert in (("high_noise", pipe.transformer), ("low_noise", pipe.transformer_2)):
        paths[role] = tmp_path / f"{role}_fp8_scaled.safetensors"
        save_file(to_fp8_scaled(to_wan_expert(expert)), str(paths[role]))
    loaded = load_pipeline(str(write_model_file(tmp_path / "m.toml", **pieces(files, **paths))))
    weight = loaded.pipe.transformer.blocks[0].attn1.to_q.weight
    original = pipe.transformer.blocks[0].attn1.to_q.weight
    assert weight.dtype == torch.float32
    # dequantized: within e4m3's 3-bit mantissa (relative step 1/8) of the original
    assert 0 < (weight - original).abs().max() <= original.abs().max() / 8
    out, _ = Engine(fast(loaded)).render(REQUEST)
    assert 0 < np.abs(np.asarray(out) - reference).max() <= 0.05  # measured 0.0146 (frames in [0, 1])


def test_official_layout(files: dict[str, Path], reference: np.ndarray, tmp_path: Path) -> None:
    root = write_official_layout(reference_pipeline(), tmp_path / "Wan2.2-I2V-A14B")
    assert np.abs(frames(root) - reference).max() <= 1e-4


def test_gguf_q8_0_experts(files: dict[str, Path], reference: np.ndarray, tmp_path: Path) -> None:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    pipe = reference_pipeline()
    paths = {}
    for role, expert in (("high_noise", pipe.transformer), ("low_noise", pipe.transformer_2)):
        paths[role] = tmp_path / f"expert_{role}.gguf"
        assert write_gguf_q8(to_wan_expert(expert), paths[role], name=f"Wan2.2-I2V-{role}") > 0
    loaded = load_pipeline(str(write_model_file(tmp_path / "m.toml", **pieces(files, **paths))))
    assert isinstance(loaded.pipe.transformer.blocks[0].ffn.net[2], GGUFLinear)
    out, _ = Engine(fast(loaded)).render(REQUEST)
    assert 0 < np.abs(np.asarray(out) - reference).max() <= 0.02  # measured 0.0056 (frames in [0, 1])


# --- errors


def test_missing_piece_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    entries = pieces(files)
    del entries["vae"], entries["diffusers"]
    with pytest.raises(ModelLoadError, match="no vae named and no diffusers directory"):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_swapped_experts_are_named(files: dict[str, Path], tmp_path: Path) -> None:
    entries = pieces(files, high_noise=files["low_noise"], low_noise=files["high_noise"])
    with pytest.raises(
        ModelLoadError, match=r"high_noise: wan2.2_i2v_low_noise_14B_fp32.safetensors is the low-noise"
    ):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_wan21_i2v_expert_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    state = to_wan_expert(reference_pipeline().transformer)
    state["img_emb.proj.1.weight"] = torch.zeros(24, 32)
    state["blocks.0.cross_attn.k_img.weight"] = torch.zeros(24, 24)
    save_file(state, str(tmp_path / "expert.safetensors"))
    entries = pieces(files, high_noise=tmp_path / "expert.safetensors")
    with pytest.raises(
        ModelLoadError, match=r"high_noise \(expert.safetensors\): this is a Wan 2.1 image-to-video"
    ):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_5b_model_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    save_file({"patch_embedding.weight": torch.zeros(3072, 48, 1, 2, 2, dtype=torch.float16),
               "head.modulation": torch.zeros(1, 2, 3072, dtype=torch.float16)},
              str(tmp_path / "wan2.2_ti2v_5B_fp16.safetensors"))  # fmt: skip
    entries = pieces(files, low_noise=tmp_path / "wan2.2_ti2v_5B_fp16.safetensors")
    with pytest.raises(ModelLoadError, match=r"low_noise .*: this is a Wan 2.2 TI2V 5B model"):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_wrong_shape_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    state = to_wan_expert(reference_pipeline().transformer_2)
    state["blocks.1.ffn.0.weight"] = torch.zeros(48, 32)
    save_file(state, str(tmp_path / "expert.safetensors"))
    entries = pieces(files, low_noise=tmp_path / "expert.safetensors")
    with pytest.raises(ModelLoadError, match=r"blocks.1.ffn.net.0.proj.weight is 48x32, expected 64x32"):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_a_vae_given_as_text_encoder_is_named(files: dict[str, Path], tmp_path: Path) -> None:
    entries = pieces(files, text_encoder=files["vae"])
    with pytest.raises(
        ModelLoadError,
        match=r"text_encoder \(wan_2.1_vae.safetensors\): not the umT5 encoder of this model: 23 tensors missing",
    ):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_not_a_weights_file(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "vae.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    entries = pieces(files, vae=tmp_path / "vae.safetensors")
    with pytest.raises(ModelLoadError, match=r"vae\.safetensors is not a safetensors, GGUF or PyTorch"):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_wan_t5_pth_is_read_with_weights_only(
    files: dict[str, Path], reference: np.ndarray, tmp_path: Path
) -> None:
    torch.save(to_wan_t5(reference_pipeline().text_encoder), tmp_path / "t5.pth")
    model = write_model_file(tmp_path / "m.toml", **pieces(files, text_encoder=tmp_path / "t5.pth"))
    assert np.abs(frames(model) - reference).max() <= 1e-4


# --- LoRAs on a quantized expert


@pytest.mark.parametrize(("layout", "bound"), [("gguf", 0.02), ("fp8_scaled", 0.05)])
def test_lora_request_on_quantized_experts(
    files: dict[str, Path], tmp_path: Path, layout: str, bound: float
) -> None:
    """GGUF: peft wraps diffusers' GGUFLinear (the base weight stays Q8_0, dequantized per call)
    and adds the LoRA branch; fp8-scaled: the experts are plain layers after dequantizing. The
    frames follow the same LoRA on the float32 model within the format's bound (measured 0.0053
    and 0.020), and the base frames come back bit for bit after it."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    pipe = reference_pipeline()
    paths = {}
    for role, expert in (("high_noise", pipe.transformer), ("low_noise", pipe.transformer_2)):
        if layout == "gguf":
            paths[role] = tmp_path / f"expert_{role}.gguf"
            write_gguf_q8(to_wan_expert(expert), paths[role], name=f"Wan2.2-I2V-{role}")
        else:
            paths[role] = tmp_path / f"{role}_fp8_scaled.safetensors"
            save_file(to_fp8_scaled(to_wan_expert(expert)), str(paths[role]))
    quantized = Engine(
        fast(load_pipeline(str(write_model_file(tmp_path / "m.toml", **pieces(files, **paths)))))
    )
    full = Engine(fast(load_pipeline(str(files["diffusers"]))))
    lora_model = WanTransformer3DModel(**EXPERT)
    add_lora(lora_model, rank=4, alpha=4.0, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    lora = {k: torch.randn(v.shape, generator=gen) * 0.5 if ".lora_B." in k else v.float()
            for k, v in lora_state_dict(lora_model).items()}  # fmt: skip
    save_file(
        {f"transformer.{k}": v.contiguous() for k, v in lora.items()}, str(tmp_path / "style.safetensors")
    )
    with_lora = replace(REQUEST, loras=(request(tmp_path / "style.safetensors"),))

    base = quantized.render(REQUEST)[0]
    on_quantized = quantized.render(with_lora)[0]
    on_full = full.render(with_lora)[0]
    wrapped = quantized.loaded.pipe.transformer.blocks[0].ffn.net[2]
    assert isinstance(wrapped.base_layer, GGUFLinear) == (layout == "gguf")  # peft's layer around it
    assert np.abs(on_quantized - base).max() > 0.1  # the LoRA changes the video (measured 0.24)
    assert np.abs(on_quantized - on_full).max() <= bound
    assert np.array_equal(quantized.render(REQUEST)[0], base)


def test_swapped_expert_is_named_by_its_metadata(files: dict[str, Path], tmp_path: Path) -> None:
    state = to_wan_expert(reference_pipeline().transformer_2)
    save_file(
        state, str(tmp_path / "expert.safetensors"), metadata={"modelspec.title": "Wan2.2 I2V A14B LowNoise"}
    )
    entries = pieces(files, high_noise=tmp_path / "expert.safetensors")
    with pytest.raises(ModelLoadError, match=r"high_noise: expert.safetensors is the low-noise expert"):
        load_pipeline(str(write_model_file(tmp_path / "m.toml", **entries)))


def test_incomplete_official_layout_names_what_is_missing(tmp_path: Path) -> None:
    root = write_official_layout(reference_pipeline(), tmp_path / "Wan2.2-I2V-A14B")
    (root / "Wan2.1_VAE.pth").unlink()
    shutil.rmtree(root / "low_noise_model")
    with pytest.raises(
        ModelLoadError, match=r"low_noise_model/ has no \.safetensors files; Wan2\.1_VAE\.pth is missing"
    ):
        load_pipeline(str(root))


def test_bf16_experts_have_the_dtypes_and_values_of_the_diffusers_directory(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """As on a GPU: a single file loads in from_pretrained's dtypes (norms, time embedder and
    modulation kept in float32), with the same values."""
    from wanforge.engine import checkpoints

    pipe = checkpoints.load(write_model_file(tmp_path / "m.toml", **pieces(files)), torch.bfloat16)
    reference = WanTransformer3DModel.from_pretrained(
        files["diffusers"], subfolder="transformer", torch_dtype=torch.bfloat16
    )
    ours = dict(pipe.transformer.named_parameters())
    theirs = dict(reference.named_parameters())
    assert {k: v.dtype for k, v in ours.items()} == {k: v.dtype for k, v in theirs.items()}
    assert {v.dtype for v in ours.values()} == {torch.bfloat16, torch.float32}
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert pipe.text_encoder.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32
