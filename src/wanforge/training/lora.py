"""LoRA adapters on a Wan expert: which linears, the peft config, and their weights.

Every block of each expert gets a LoRA on each attention projection (self and cross attention:
q, k, v, out; plus the image key/value projections where the model has them, as Wan 2.1 I2V
does) and on both FFN linears. Names here are diffusers' (`blocks.0.attn1.to_q`); `export.py`
maps them to the original Wan names.
"""

from __future__ import annotations

import math
import warnings

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

ADAPTER_NAME = "wanforge_train"

# The one list of LoRA target layers: module suffix inside a `blocks.{i}` block (diffusers'
# name) -> the original Wan name that `export.py` writes. Optional ones (the image key/value
# projections) are adapted only where the model has them.
BLOCK_TARGETS: dict[str, str] = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}


def lora_target_modules(transformer: WanTransformer3DModel) -> list[str]:
    """Full names of the linears to adapt, in model order (`blocks.{i}.{suffix}`)."""
    modules = dict(transformer.named_modules())
    targets: list[str] = []
    for i in range(len(transformer.blocks)):
        for suffix in BLOCK_TARGETS:
            name = f"blocks.{i}.{suffix}"
            module = modules.get(name)
            if isinstance(module, torch.nn.Linear | LoraLayer):
                targets.append(name)
    return targets


def make_lora_config(targets: list[str], rank: int, alpha: float | None) -> LoraConfig:
    """rank `rank`, alpha = rank unless given, B initialised to zero (`init_lora_weights=True`)."""
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    return LoraConfig(
        r=rank,
        lora_alpha=float(rank if alpha is None else alpha),  # type: ignore[arg-type]  # floats work
        target_modules=targets,
        init_lora_weights=True,
        lora_dropout=0.0,
        bias="none",
    )


def add_lora(
    transformer: WanTransformer3DModel,
    rank: int,
    alpha: float | None,
    generator: torch.Generator,
    adapter_name: str = ADAPTER_NAME,
) -> list[str]:
    """Freeze the expert, inject a fresh LoRA adapter and make it the active, trainable one.

    A is drawn as peft draws it (Kaiming uniform, a = sqrt(5)) but from `generator` on the CPU,
    so the start is the same on every device and in every process; B is zero.
    """
    targets = lora_target_modules(transformer)
    if not targets:
        raise ValueError("the transformer has no linears to adapt")
    transformer.requires_grad_(False)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft's own init must not move the caller's RNG; beside the engine's cached generation
        # adapters peft warns of "multiple adapters", which is what is meant here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        transformer.add_adapter(make_lora_config(targets, rank, alpha), adapter_name=adapter_name)
    transformer.set_adapter(adapter_name)
    with torch.no_grad():
        for name, param in lora_parameters(transformer, adapter_name).items():
            if ".lora_A." in name:
                init = torch.empty(param.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(init, a=math.sqrt(5), generator=generator)
                param.copy_(init)
    for param in lora_parameters(transformer, adapter_name).values():
        # peft keeps the adapter in the base dtype (bf16 on a GPU), where Adam's small updates
        # round away and weight decay does nothing: train the adapter in float32 (peft casts
        # the layer input to it and the result back); exports cast to their own dtype
        param.data = param.data.float()
        param.requires_grad_(True)
    return targets


def move_to(module: torch.nn.Module, device: torch.device | str) -> None:
    """`module.to(device)` (typed as nn.Module: mypy cannot see through ModelMixin.to's wrapper)."""
    module.to(device)


def remove_lora(transformer: WanTransformer3DModel, adapter_name: str = ADAPTER_NAME) -> None:
    """Take the trainer's adapter out again. Other adapters (the LoRAs a worker's engine keeps
    loaded for generation, on the same pipeline) stay as they were, inactive: the engine sets the
    active ones per request. With none left, the expert gets its own plain linears back."""
    config = getattr(transformer, "peft_config", None) or {}
    if adapter_name in config:
        with warnings.catch_warnings():  # peft names the adapter it makes active instead: undone below
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            transformer.delete_adapters(adapter_name)
    if getattr(transformer, "peft_config", None):
        transformer.set_adapters([], [])  # the engine's resting state: no adapter active
    elif lora_modules(transformer):  # no adapter left, but peft's wrappers are: the plain linears back
        transformer.unload_lora()


def lora_parameters(
    transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME
) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters by name, sorted (a stable order for the optimizer state)."""
    marker = f".{adapter_name}."
    params = {
        name: param for name, param in transformer.named_parameters() if "lora_" in name and marker in name
    }
    return dict(sorted(params.items()))


def lora_state_dict(
    transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME
) -> dict[str, torch.Tensor]:
    """`{"blocks.0.attn1.to_q.lora_A.weight": tensor, ...}` as detached CPU copies."""
    state = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sorted(state.items())}


def load_lora_state_dict(
    transformer: torch.nn.Module, state: dict[str, torch.Tensor], adapter_name: str = ADAPTER_NAME
) -> None:
    """Load weights saved by `lora_state_dict` into an injected adapter; every key must match."""
    expected = set(get_peft_model_state_dict(transformer, adapter_name=adapter_name))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"LoRA state mismatch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)


def lora_modules(transformer: torch.nn.Module) -> set[str]:
    """Names of the modules that carry a LoRA layer (for comparing two models' adapters)."""
    return {name for name, module in transformer.named_modules() if isinstance(module, LoraLayer)}
