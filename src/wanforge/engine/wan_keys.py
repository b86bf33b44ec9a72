"""The tensor names of the checkpoint files people have, written down from the reference code.

No weights: the names (and the A14B shapes) of what the loaders in
:mod:`wanforge.engine.checkpoints` read, so that tests can check the converters against them.

- Wan2.2's model definition (``wan/modules/model.py``, ``WanModel`` with ``model_type="i2v"``,
  ``cross_attn_norm=True``, ``qk_norm=True``): the experts of the official layout
  (``high_noise_model/``, ``low_noise_model/``) and of ComfyUI's repackaged single files, which
  add the ``model.diffusion_model.`` prefix (or not) and, in the ``_fp8_scaled`` files, a
  ``scaled_fp8`` marker and a ``<layer>.scale_weight`` per float8 layer (ComfyUI's
  ``comfy/model_detection.py`` and ``comfy/ops.py``, ``scaled_fp8_ops``).
- ComfyUI-GGUF (``loader.py``): the same names without prefix, ``general.architecture = "wan"``,
  and a ``comfy.gguf.orig_shape.<name>`` entry for tensors of more than 4 dimensions (GGUF's
  limit), which were stored reshaped.
- Wan's umT5 (``wan/modules/t5.py``, ``umt5_xxl``, encoder only): ``models_t5_umt5-xxl-enc-bf16.pth``;
  ComfyUI's ``umt5_xxl_*.safetensors`` use transformers' T5 names instead.
- Wan's VAE (``wan/modules/vae2_1.py``, ``WanVAE_``): ``Wan2.1_VAE.pth`` and ComfyUI's
  ``wan_2.1_vae.safetensors``.
"""

from __future__ import annotations

COMFY_PREFIX = "model.diffusion_model."
COMFY_FP8_MARKER = "scaled_fp8"  # a 0-size tensor whose dtype is the float8 type of the file
COMFY_FP8_SCALE = "scale_weight"  # <layer>.scale_weight: the weight is fp8 * scale
COMFY_FP8_INPUT_SCALE = "scale_input"  # optional, for fp8 matmuls; not needed to dequantize
# ComfyUI's umT5 files carry their tokenizer: the serialized sentencepiece model as a uint8 tensor
# (comfy/text_encoders/wan.py, UMT5XXlTokenizer reads tokenizer_data["spiece_model"])
COMFY_TOKENIZER = "spiece_model"
GGUF_ARCHITECTURE = "wan"
GGUF_ORIG_SHAPE = "comfy.gguf.orig_shape."

# --- the expert (WanModel), A14B sizes: dim 5120, ffn 13824, 40 heads, 40 layers, in_dim 36
A14B_DIM = 5120
A14B_FFN = 13824
A14B_IN = 36
A14B_OUT = 16
A14B_TEXT = 4096
A14B_FREQ = 256
A14B_LAYERS = 40

EXPERT_TOP: dict[str, tuple[int, ...]] = {
    "patch_embedding.weight": (A14B_DIM, A14B_IN, 1, 2, 2),
    "patch_embedding.bias": (A14B_DIM,),
    "text_embedding.0.weight": (A14B_DIM, A14B_TEXT),
    "text_embedding.0.bias": (A14B_DIM,),
    "text_embedding.2.weight": (A14B_DIM, A14B_DIM),
    "text_embedding.2.bias": (A14B_DIM,),
    "time_embedding.0.weight": (A14B_DIM, A14B_FREQ),
    "time_embedding.0.bias": (A14B_DIM,),
    "time_embedding.2.weight": (A14B_DIM, A14B_DIM),
    "time_embedding.2.bias": (A14B_DIM,),
    "time_projection.1.weight": (6 * A14B_DIM, A14B_DIM),
    "time_projection.1.bias": (6 * A14B_DIM,),
    "head.modulation": (1, 2, A14B_DIM),
    "head.head.weight": (4 * A14B_OUT, A14B_DIM),  # patch 1x2x2 times 16 channels
    "head.head.bias": (4 * A14B_OUT,),
}
# blocks.N.<name> (norm1 and norm2 have no parameters; norm3 is the cross-attention norm)
EXPERT_BLOCK: dict[str, tuple[int, ...]] = {
    "modulation": (1, 6, A14B_DIM),
    **{f"self_attn.{p}.weight": (A14B_DIM, A14B_DIM) for p in "qkvo"},
    **{f"self_attn.{p}.bias": (A14B_DIM,) for p in "qkvo"},
    "self_attn.norm_q.weight": (A14B_DIM,),
    "self_attn.norm_k.weight": (A14B_DIM,),
    "norm3.weight": (A14B_DIM,),
    "norm3.bias": (A14B_DIM,),
    **{f"cross_attn.{p}.weight": (A14B_DIM, A14B_DIM) for p in "qkvo"},
    **{f"cross_attn.{p}.bias": (A14B_DIM,) for p in "qkvo"},
    "cross_attn.norm_q.weight": (A14B_DIM,),
    "cross_attn.norm_k.weight": (A14B_DIM,),
    "ffn.0.weight": (A14B_FFN, A14B_DIM),
    "ffn.0.bias": (A14B_FFN,),
    "ffn.2.weight": (A14B_DIM, A14B_FFN),
    "ffn.2.bias": (A14B_DIM,),
}
# The float8 layers of ComfyUI's ``*_fp8_scaled`` experts: the Linear weights of the blocks, each
# with a ``scale_weight``; embeddings, head, norms, modulation and biases stay 16/32-bit.
EXPERT_FP8_LINEARS = tuple(
    name.removesuffix(".weight")
    for name in EXPERT_BLOCK
    if name.endswith(".weight") and ("_attn." in name or name.startswith("ffn.")) and ".norm_" not in name
)
# Wan 2.1's I2V experts have a CLIP image branch the 2.2 experts lack
WAN21_IMAGE_BRANCH = ("img_emb.proj.0.weight", "blocks.0.cross_attn.k_img.weight")


def expert_keys(num_layers: int = A14B_LAYERS) -> list[str]:
    """Every tensor name of one Wan 2.2 I2V expert in the original names (no prefix)."""
    blocks = [f"blocks.{i}.{name}" for i in range(num_layers) for name in EXPERT_BLOCK]
    return [*EXPERT_TOP, *blocks]


def expert_shapes(num_layers: int = A14B_LAYERS) -> dict[str, tuple[int, ...]]:
    """The A14B shape of every tensor of :func:`expert_keys`."""
    blocks = {f"blocks.{i}.{name}": shape for i in range(num_layers) for name, shape in EXPERT_BLOCK.items()}
    return {**EXPERT_TOP, **blocks}


# --- umT5-xxl, encoder only: Wan's names (the .pth) and transformers' names (ComfyUI's files)
UMT5_LAYERS = 24
WAN_T5_TO_HF_TOP = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}
WAN_T5_TO_HF_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    # umT5 has a relative position table per layer (Wan: shared_pos=False)
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gelu(gate(x)) * fc1(x)
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def wan_t5_keys(num_layers: int = UMT5_LAYERS) -> list[str]:
    """Every tensor name of ``models_t5_umt5-xxl-enc-bf16.pth``."""
    blocks = [f"blocks.{i}.{name}" for i in range(num_layers) for name in WAN_T5_TO_HF_BLOCK]
    return [*WAN_T5_TO_HF_TOP, *blocks]


def hf_t5_keys(num_layers: int = UMT5_LAYERS) -> list[str]:
    """The same tensors in transformers' names (ComfyUI's ``umt5_xxl_fp16.safetensors``)."""
    blocks = [f"encoder.block.{i}.{name}" for i in range(num_layers) for name in WAN_T5_TO_HF_BLOCK.values()]
    return [*WAN_T5_TO_HF_TOP.values(), *blocks]


# --- the Wan 2.1 VAE (WanVAE_, dim 96, dim_mult [1, 2, 4, 4], 2 res blocks, temporal down [F, T, T])
def _residual(prefix: str, shortcut: bool) -> list[str]:
    # residual = [RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d]
    names = ["residual.0.gamma", "residual.2.weight", "residual.2.bias", "residual.3.gamma"]
    names += ["residual.6.weight", "residual.6.bias"]
    if shortcut:
        names += ["shortcut.weight", "shortcut.bias"]
    return [f"{prefix}.{n}" for n in names]


def _resample(prefix: str, temporal: bool) -> list[str]:
    names = ["resample.1.weight", "resample.1.bias"]  # [ZeroPad2d or Upsample, Conv2d]
    if temporal:
        names += ["time_conv.weight", "time_conv.bias"]
    return [f"{prefix}.{n}" for n in names]


def _middle(prefix: str) -> list[str]:
    attention = [f"{prefix}.middle.1.{n}" for n in ("norm.gamma", "to_qkv.weight", "to_qkv.bias")]
    attention += [f"{prefix}.middle.1.proj.weight", f"{prefix}.middle.1.proj.bias"]
    return [*_residual(f"{prefix}.middle.0", False), *attention, *_residual(f"{prefix}.middle.2", False)]


def wan_vae_keys() -> list[str]:
    """Every tensor name of ``Wan2.1_VAE.pth`` / ``wan_2.1_vae.safetensors``."""
    mult = (1, 2, 4, 4)
    keys = ["encoder.conv1.weight", "encoder.conv1.bias"]
    index, in_mult = 0, 1
    for level, m in enumerate(mult):  # encoder: 2 res blocks per level, then a downsample
        for _ in range(2):
            keys += _residual(f"encoder.downsamples.{index}", in_mult != m)
            index, in_mult = index + 1, m
        if level < len(mult) - 1:
            keys += _resample(f"encoder.downsamples.{index}", temporal=level > 0)
            index += 1
    keys += _middle("encoder")
    keys += ["encoder.head.0.gamma", "encoder.head.2.weight", "encoder.head.2.bias"]
    keys += ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    keys += ["decoder.conv1.weight", "decoder.conv1.bias", *_middle("decoder")]
    index = 0
    for level in range(len(mult)):  # decoder: 3 res blocks per level, then an upsample
        for block in range(3):
            # level 1 starts at half the channels of level 0's upsample: the only shortcut
            keys += _residual(f"decoder.upsamples.{index}", level == 1 and block == 0)
            index += 1
        if level < len(mult) - 1:
            keys += _resample(f"decoder.upsamples.{index}", temporal=level < 2)
            index += 1
    keys += ["decoder.head.0.gamma", "decoder.head.2.weight", "decoder.head.2.bias"]
    return keys
