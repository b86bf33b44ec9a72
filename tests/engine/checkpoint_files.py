"""The tiny model written in the layouts people have: original Wan names, ComfyUI's single files
and fp8-scaled format, GGUF, the official Wan-AI/Wan2.2-I2V-A14B directory.

The reference is the demo model with two changes that real checkpoints need and the demo lacks:
the experts are 32 wide (2 heads of 16, FFN 64), so GGUF's 32-value Q8_0 blocks fit their rows,
and the VAE has the Wan 2.1 VAE's structure (4 levels, 2 res blocks, channel multipliers 1/2/4/4)
at width 4, which diffusers' VAE converter assumes. The text encoder uses umT5-xxl's 32 relative
buckets and distance 128, which Wan's own T5 hard-codes.

The inverse renames come from diffusers' converters themselves: each original name of
:mod:`wanforge.engine.wan_keys` is converted alone, and the result maps back to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from safetensors.torch import save_file
from transformers import UMT5Config, UMT5EncoderModel

from wanforge.engine import demo, wan_keys

SEED = 4242
EXPERT = {**demo.transformer_config(), "attention_head_dim": 16, "ffn_dim": 64}
VAE = {"base_dim": 4, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
       "temperal_downsample": [False, True, True]}  # fmt: skip
T5_BUCKETS, T5_DISTANCE = 32, 128
FP8_MAX = 448.0  # float8_e4m3fn's largest value


def reference_pipeline() -> WanImageToVideoPipeline:
    parts = demo.build_demo_components(SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 10)
        config = UMT5Config(**{**parts.text_encoder.config.to_dict(), "relative_attention_num_buckets": T5_BUCKETS,
                               "relative_attention_max_distance": T5_DISTANCE})  # fmt: skip
        parts.text_encoder = UMT5EncoderModel(config).eval()
        torch.manual_seed(SEED + 11)
        parts.vae = AutoencoderKLWan(**VAE).eval()
        torch.manual_seed(SEED + 12)
        parts.transformer = WanTransformer3DModel(**EXPERT).eval()
        torch.manual_seed(SEED + 13)
        parts.transformer_2 = WanTransformer3DModel(**EXPERT).eval()
    return WanImageToVideoPipeline(**parts.as_kwargs())


def _inverse(originals: list[str], convert: Any) -> dict[str, str]:
    """diffusers name -> original name, by converting each original name alone."""
    inverse: dict[str, str] = {}
    for name in originals:
        (converted,) = convert({name: name}).keys()
        inverse[converted] = name
    return inverse


def to_wan_expert(model: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    """An expert's state dict in Wan's original names."""
    inverse = _inverse(wan_keys.expert_keys(len(model.blocks)), convert_wan_transformer_to_diffusers)
    return {inverse[k]: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def to_wan_vae(vae: torch.nn.Module) -> dict[str, torch.Tensor]:
    inverse = _inverse(wan_keys.wan_vae_keys(), convert_wan_vae_to_diffusers)
    return {inverse[k]: v.detach().clone().contiguous() for k, v in vae.state_dict().items()}


def to_wan_t5(encoder: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    """The umT5 encoder in Wan's own T5 names (``models_t5_umt5-xxl-enc-bf16.pth``)."""
    layers = encoder.config.num_layers
    inverse = dict(zip(wan_keys.hf_t5_keys(layers), wan_keys.wan_t5_keys(layers), strict=True))
    state = encoder.state_dict()
    return {inverse[k]: state[k].detach().clone().contiguous() for k in inverse}


def to_hf_t5(encoder: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    """transformers' names without the tied copy, plus the serialized tokenizer as a uint8
    ``spiece_model`` tensor, as in ComfyUI's ``umt5_xxl_fp16.safetensors``."""
    state = encoder.state_dict()
    out = {k: state[k].detach().clone().contiguous() for k in wan_keys.hf_t5_keys(encoder.config.num_layers)}
    out[wan_keys.COMFY_TOKENIZER] = torch.frombuffer(
        bytearray(b"\n\x0bsentencepiece stand-in"), dtype=torch.uint8
    )
    return out


def to_fp8_scaled(
    state: dict[str, torch.Tensor], prefix: str = wan_keys.COMFY_PREFIX
) -> dict[str, torch.Tensor]:
    """ComfyUI's fp8-scaled expert: the blocks' linear weights as float8_e4m3fn with a per-tensor
    ``scale_weight`` (absmax / 448), the ``scaled_fp8`` marker, the rest in float16."""
    fp8 = {f"blocks.{i}.{n}" for i in range(len({k.split('.')[1] for k in state if k.startswith('blocks.')}))
           for n in wan_keys.EXPERT_FP8_LINEARS}  # fmt: skip
    out: dict[str, torch.Tensor] = {
        prefix + wan_keys.COMFY_FP8_MARKER: torch.empty(0, dtype=torch.float8_e4m3fn)
    }
    for key, value in state.items():
        layer = key.removesuffix(".weight")
        if key.endswith(".weight") and layer in fp8:
            scale = value.abs().max().float() / FP8_MAX
            out[prefix + key] = (value.float() / scale).to(torch.float8_e4m3fn)
            out[f"{prefix}{layer}.{wan_keys.COMFY_FP8_SCALE}"] = scale.reshape(())
        else:
            out[prefix + key] = value.to(torch.float16)
    return out


def write_gguf_q8(state: dict[str, torch.Tensor], path: Path, name: str = "Wan2.2-I2V-A14B-HighNoise") -> int:
    """A GGUF file as ComfyUI-GGUF's convert tool writes it: Q8_0 for 2-D weights whose rows are
    whole 32-value blocks, F32 for the rest; tensors of more than 4 dimensions flattened to 2-D
    with a ``comfy.gguf.orig_shape`` entry. Returns how many tensors are Q8_0."""
    writer = gguf.GGUFWriter(str(path), arch=wan_keys.GGUF_ARCHITECTURE)
    writer.add_name(name)
    quantized = 0
    for key, value in state.items():
        data = value.detach().float().numpy()
        if data.ndim > 4:
            writer.add_array(wan_keys.GGUF_ORIG_SHAPE + key, list(data.shape))
            data = data.reshape(data.shape[0], -1)
        if data.ndim == 2 and key.endswith(".weight") and data.shape[1] % 32 == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(key, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            quantized += 1
        else:
            writer.add_tensor(key, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return quantized


def write_official_layout(pipe: WanImageToVideoPipeline, root: Path) -> Path:
    """The Wan-AI/Wan2.2-I2V-A14B layout: sharded experts with Wan's config.json, the umT5 and
    VAE as .pth files, the tokenizer in google/umt5-xxl/."""
    root.mkdir(parents=True)
    for sub, expert in (("high_noise_model", pipe.transformer), ("low_noise_model", pipe.transformer_2)):
        folder = root / sub
        folder.mkdir()
        state = to_wan_expert(expert)
        keys = sorted(state)
        half = len(keys) // 2
        shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
                  "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}  # fmt: skip
        for file, names in shards.items():
            save_file({k: state[k] for k in names}, str(folder / file))
        index = {"weight_map": {k: file for file, names in shards.items() for k in names}}
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
        c = expert.config
        wan_config = {"_class_name": "WanModel", "model_type": "i2v", "text_len": 512, "in_dim": c.in_channels,
                      "dim": c.num_attention_heads * c.attention_head_dim, "ffn_dim": c.ffn_dim,
                      "freq_dim": c.freq_dim, "out_dim": c.out_channels, "num_heads": c.num_attention_heads,
                      "num_layers": c.num_layers, "eps": 1e-6, "text_dim": c.text_dim}  # fmt: skip
        (folder / "config.json").write_text(json.dumps(wan_config))
    torch.save(to_wan_t5(pipe.text_encoder), root / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(to_wan_vae(pipe.vae), root / "Wan2.1_VAE.pth")
    pipe.tokenizer.save_pretrained(root / "google" / "umt5-xxl")
    return root


def write_model_file(path: Path, **entries: Path | str) -> Path:
    path.write_text("".join(f"{name} = {json.dumps(str(value))}\n" for name, value in entries.items()))
    return path
