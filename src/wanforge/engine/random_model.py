"""Random-weight models built from the real classes at a named size: ``--model random:a14b``.

Speed and memory do not depend on weight values, so a full-size Wan2.2-I2V-A14B can run on a
GPU with nothing downloaded and nothing written to disk. Every module is built on the meta device
(no memory), materialised with ``to_empty`` where it will live and filled in place with seeded
random values; the experts' rotary tables (buffers computed in ``__init__``, which ``to_empty``
leaves uninitialised) are rebuilt there. Its videos are noise.

The model string is ``random:<size>[?layers=N][&text_layers=N]``:

- ``a14b``: the real configs of Wan2.2-I2V-A14B-Diffusers: both experts (40 layers, dim 5120, FFN
  13824, 40 heads, 36 input channels, text width 4096; 14.29 B parameters each), the Wan 2.1 VAE
  (float32, as the engine runs it), an umT5-xxl encoder (d_model 4096, 24 layers, 64 heads, the
  256,384-token vocabulary: 5.68 B parameters, the real size, so the memory plan sees the real
  component sizes), the scheduler config and ``boundary_ratio`` 0.9, with the A14B profile. The
  tokenizer is the demo's small one trained in code (its ids are a subset of the vocabulary).
- ``tiny``: the demo model's sizes (``wanforge.engine.demo``) with the demo profile, built the
  same way: the CPU tests and ``gpu_acceptance.py --smoke`` run this path in seconds.
- ``layers`` sets each expert's depth, ``text_layers`` the text encoder's (fewer layers, the
  same widths): ``random:a14b?layers=1&text_layers=1`` has every full-size tensor shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wanforge.engine import demo
from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B, ModelProfile

RANDOM_PREFIX = "random:"
Size = Literal["a14b", "tiny"]
SIZES: tuple[Size, ...] = ("a14b", "tiny")
RANDOM_SEED = 20250728
M = TypeVar("M", bound=torch.nn.Module)

# Wan2.2-I2V-A14B, each expert (transformer/config.json and transformer_2/config.json)
A14B_EXPERT: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
# vae/config.json: the Wan 2.1 VAE (diffusers' defaults, spelled out)
A14B_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
}
# text_encoder/config.json: google/umt5-xxl's encoder
UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.0,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 0,
    "eos_token_id": 1,
}


@dataclass(frozen=True)
class RandomSpec:
    """What ``random:<size>?layers=N&text_layers=N`` asks for (``None``: the size's own depth)."""

    size: Size
    layers: int | None = None
    text_layers: int | None = None

    @property
    def profile(self) -> ModelProfile:
        return WAN22_I2V_A14B if self.size == "a14b" else DEMO


def is_random_model(model: str) -> bool:
    return model.startswith(RANDOM_PREFIX)


def parse_random_model(model: str) -> RandomSpec:
    """``random:a14b``, ``random:tiny``, optionally ``?layers=N&text_layers=N``; else ValueError."""
    if not is_random_model(model):
        raise ValueError(f"{model!r} is not a random model (expected 'random:<size>')")
    size, _, query = model.removeprefix(RANDOM_PREFIX).partition("?")
    if size not in SIZES:
        raise ValueError(f"unknown random model size {size!r} in {model!r}; expected one of {list(SIZES)}")
    depths: dict[str, int] = {}
    for key, _, value in (part.partition("=") for part in query.split("&") if query):
        if key not in ("layers", "text_layers") or key in depths:
            raise ValueError(f"{model!r}: unknown or repeated option {key!r}; expected layers, text_layers")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{model!r}: {key} must be a whole number >= 1, got {value!r}")
        depths[key] = int(value)
    return RandomSpec(size, depths.get("layers"), depths.get("text_layers"))


def expert_config(spec: RandomSpec) -> dict[str, Any]:
    config = dict(A14B_EXPERT) if spec.size == "a14b" else demo.transformer_config()
    if spec.layers is not None:
        config["num_layers"] = spec.layers
    return config


def text_encoder_config(spec: RandomSpec, vocab_size: int) -> UMT5Config:
    if spec.size == "a14b":
        config = UMT5Config(**UMT5_XXL)
    else:
        with torch.device("meta"):
            config = demo.build_text_encoder(vocab_size).config
    if spec.text_layers is not None:
        config.num_layers = spec.text_layers
    return config


def _fill(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random values in place: weights N(0, 1/fan_in), biases 0, norm scales about 1."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                param.zero_()
            elif leaf == "gamma" or "norm" in name:
                param.normal_(1.0, 0.02, generator=gen)
            elif param.dim() >= 2:
                fan_in = param[0].numel()
                param.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)
            else:
                param.normal_(0.0, 0.02, generator=gen)


def cast_as_loaded(module: M, dtype: torch.dtype) -> M:
    """``module.to(dtype)``, except the parameters a diffusers ``from_pretrained(torch_dtype=...)``
    keeps in float32 (the class's ``_keep_in_fp32_modules``: the Wan expert's norms, time embedder
    and modulation tables), so a random module has the dtypes of a loaded checkpoint."""
    # transformers' own list (umT5's "wo") applies to float16 only; diffusers' to any dtype
    keep = (
        set(getattr(module, "_keep_in_fp32_modules", None) or ()) if isinstance(module, ModelMixin) else set()
    )
    with torch.no_grad():
        for name, param in module.named_parameters():
            wanted = torch.float32 if keep.intersection(name.split(".")) else dtype
            if param.is_floating_point() and param.dtype != wanted:
                param.data = param.data.to(wanted)
    return module


def _shared_parameters(module: torch.nn.Module) -> list[list[tuple[torch.nn.Module, str]]]:
    """Each parameter held by more than one module (tied weights), as (module, name) pairs."""
    holders: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            holders.setdefault(id(param), []).append((sub, name))
    return [group for group in holders.values() if len(group) > 1]


def materialize(
    module: M,
    device: torch.device,
    dtype: torch.dtype | None,
    seed: int,
    *,
    fill_device: torch.device | None = None,
) -> M:
    """A meta ``module`` made real on ``device`` (in ``dtype``, when given) and filled in place.

    ``dtype`` is applied on the meta device first, so a bf16 expert never exists in float32.
    ``fill_device`` (a GPU, for a module that lives on the CPU) makes and fills it there first and
    then moves it: filling billions of values is seconds on a GPU and minutes on a few cores.
    """
    if dtype is not None:
        cast_as_loaded(module, dtype)
    tied = _shared_parameters(module)
    where = fill_device or device
    module.to_empty(device=where)
    for (first, first_name), *others in tied:  # to_empty gives each holder its own tensor
        for sub, name in others:
            setattr(sub, name, getattr(first, first_name))
    _fill(module, torch.Generator(device=where).manual_seed(seed))
    if isinstance(module, WanTransformer3DModel):  # the rotary tables are computed, not loaded
        config = module.config
        module.rope = WanRotaryPosEmbed(
            config.attention_head_dim, config.patch_size, config.rope_max_seq_len
        ).to(where)
    leftover = [name for name, b in module.named_buffers() if not name.startswith("rope.")]
    if leftover:  # a buffer this code does not know how to rebuild would hold garbage
        raise RuntimeError(f"{type(module).__name__} has buffers to rebuild: {leftover[:5]}")
    if where != device:
        module.to(device)
    return module.eval()


def build_expert(
    config: dict[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0
) -> WanTransformer3DModel:
    """One Wan expert of ``config`` with random weights, built in ``dtype`` directly on ``device``."""
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    return materialize(model, device, dtype, seed)


@dataclass
class RandomComponents:
    """The components of ``WanImageToVideoPipeline``; the modules are on the meta device until
    :meth:`materialize` puts them on a device."""

    spec: RandomSpec
    tokenizer: Any
    text_encoder: UMT5EncoderModel
    vae: AutoencoderKLWan
    scheduler: Any
    transformer: WanTransformer3DModel
    transformer_2: WanTransformer3DModel
    boundary_ratio: float = 0.9

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "text_encoder": self.text_encoder,
            "vae": self.vae,
            "transformer": self.transformer,
            "transformer_2": self.transformer_2,
        }

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer,
            "scheduler": self.scheduler,
            "boundary_ratio": self.boundary_ratio,
            **self.modules(),
        }


def build_meta_components(spec: RandomSpec, dtype: torch.dtype) -> RandomComponents:
    """Every component at its size on the meta device (no memory): the experts and the text
    encoder in ``dtype``, the VAE in float32."""
    tokenizer = demo.build_tokenizer()
    config = expert_config(spec)
    with torch.device("meta"):
        # all in ``dtype``, as a loaded umT5 (transformers upcasts its "wo" layers for float16 only)
        text_encoder = cast_as_loaded(UMT5EncoderModel(text_encoder_config(spec, len(tokenizer))), dtype)
        vae = AutoencoderKLWan(**A14B_VAE) if spec.size == "a14b" else demo.build_vae()
        experts = [cast_as_loaded(WanTransformer3DModel(**config), dtype) for _ in range(2)]
    return RandomComponents(
        spec=spec,
        tokenizer=tokenizer,
        text_encoder=text_encoder.eval(),
        vae=vae.eval(),
        scheduler=demo.build_scheduler(),  # the checkpoint's UniPC flow config (the engine sets the shift)
        transformer=experts[0],
        transformer_2=experts[1],
    )


def materialize_components(
    components: dict[str, torch.nn.Module],
    home: Callable[[str], torch.device],
    *,
    fill_device: torch.device | None = None,
    seed: int = RANDOM_SEED,
) -> None:
    """Make each meta module real where ``home(name)`` says it lives (its dtype kept), each with
    its own seed, so two builds on one device are identical; modules already real are left.
    With ``fill_device`` (a GPU) a module whose home is elsewhere is filled there and moved."""
    for offset, (name, module) in enumerate(sorted(components.items())):
        if any(p.is_meta for p in module.parameters()):
            device = home(name)
            fill = fill_device if fill_device is not None and fill_device != device else None
            materialize(module, device, None, seed + offset, fill_device=fill)


def homes(target: torch.device, memory_mode: str, fp8: str = "off") -> dict[str, torch.device]:
    """Where each module is made: everything on ``target`` in ``gpu`` mode, all but the text
    encoder in ``text_encoder_offload`` (the plan's mode, engine/plan.py); otherwise on the CPU,
    where the offload hooks take it from. With FP8 on, the experts start on the CPU as a loaded
    checkpoint's do, so the engine converts them from there (storage: before placement; compute:
    one expert at a time on the device) and never holds both in bf16 on the GPU."""
    cpu = torch.device("cpu")
    resident = target if memory_mode in ("gpu", "text_encoder_offload") else cpu
    experts = resident if fp8 == "off" else cpu
    text = target if memory_mode == "gpu" else cpu
    return {"text_encoder": text, "vae": resident, "transformer": experts, "transformer_2": experts}


def materialize_for_mode(
    parts: RandomComponents, target: torch.device, memory_mode: str, *, fp8: str = "off"
) -> None:
    """Make the meta components real where :func:`homes` says; a module bound for the CPU is
    filled on a CUDA ``target`` and moved (unless ``group_offload``, chosen when the largest
    module does not fit there)."""
    where = homes(target, memory_mode, fp8)
    fill = target if target.type == "cuda" and memory_mode != "group_offload" else None
    materialize_components(parts.modules(), where.__getitem__, fill_device=fill)
    if target.type == "cuda":
        torch.cuda.empty_cache()
