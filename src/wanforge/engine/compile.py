"""Regional compile of both experts, and the LoRA slot that lets a compiled expert change LoRAs
without recompiling.

``WANFORGE_COMPILE=regional``: diffusers' ``compile_repeated_blocks(fullgraph=True)`` compiles
each expert's ``WanTransformerBlock`` (40 identical blocks in the A14B experts, one graph for all of
them and for both experts: the parameters are graph inputs, not constants), leaving the embedders
and the head eager. The first generation at a new size compiles (dynamo then marks the changed
dimensions dynamic, so a third size does not compile again).

A compiled block bakes in which LoRA layers exist, which adapters are active, their ranks and
their scales: the uncompiled path of :mod:`wanforge.engine.adapters` (one peft adapter per file,
``set_adapters`` per request) would recompile on every change. Under compile each expert instead
carries one peft adapter, :data:`SLOT_ADAPTER`, made before compiling:

- on every ``nn.Linear`` of the expert (every layer a LoRA file can target), of rank
  ``WANFORGE_COMPILE_MAX_LORA_RANK``, with a LoRA bias, zero (so it adds exactly 0), always active;
- through peft's ``prepare_model_for_compiled_hotswap``, which pads it to that rank and makes its
  scalings tensors (a float scaling is a constant of the graph).

Per request the files one expert runs are written into that slot in place with peft's
``hotswap_adapter_from_state_dict``: stacked along the rank (``A = [A1; A2]``,
``B = [s1 B1, s2 B2]``, bias ``s1 b1 + s2 b2``: ``B A x`` is then exactly ``s1 B1 A1 x + s2 B2 A2 x``
up to float rounding), zero-padded to the slot's rank, zero on the layers no file targets. No
file (a base request): the slot is all zeros. Nothing the graph guards on changes, so nothing
recompiles. The price: every linear also runs a rank-``max_rank`` product (measure it), and the
LoRAs of one request together may use at most ``max_rank`` ranks per layer (else 1401 naming the
setting). ``max_rank=0`` makes no slot: that worker refuses LoRAs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from diffusers.models.modeling_utils import ModelMixin
from peft import LoraConfig, inject_adapter_in_model
from peft.utils.hotswap import hotswap_adapter_from_state_dict, prepare_model_for_compiled_hotswap

from wanforge.engine.loras import Expert, LoraError

CompileMode = Literal["off", "regional"]
COMPILE_MODES: tuple[CompileMode, ...] = get_args(CompileMode)
SETTING = "WANFORGE_COMPILE"
RANK_SETTING = "WANFORGE_COMPILE_MAX_LORA_RANK"
SLOT_ADAPTER = "wf_compiled"
_PARTS = ("lora_A.weight", "lora_B.weight", "lora_B.bias")

# (adapter name, its LoRA tensors by diffusers key such as ``blocks.0.attn1.to_q.lora_A.weight``, scale)
SlotLora = tuple[str, dict[str, torch.Tensor], float]


def check_compile(mode: str, max_lora_rank: int) -> CompileMode:
    """Refuse an unknown compile mode or a negative rank before any weights are read."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"{SETTING} must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if max_lora_rank < 0:
        raise ValueError(f"{RANK_SETTING} must be >= 0, got {max_lora_rank}")
    return "regional" if mode == "regional" else "off"


class LoraSlots:
    """The LoRA slot of each compiled expert, and what each one holds now."""

    def __init__(self, rank: int, dtype: torch.dtype) -> None:
        self.rank = rank
        self.dtype = dtype
        # what each expert's slot holds: the (adapter, scale) pairs written last
        self._holding: dict[Expert, tuple[tuple[str, float], ...]] = {}

    def prepare(self, expert: torch.nn.Module) -> None:
        """Add the zero slot adapter to every linear of ``expert`` (before it is compiled)."""
        targets = [name for name, module in expert.named_modules() if isinstance(module, torch.nn.Linear)]
        config = LoraConfig(r=1, lora_alpha=1, target_modules=targets, lora_bias=True)
        inject_adapter_in_model(config, expert, adapter_name=SLOT_ADAPTER)
        prepare_model_for_compiled_hotswap(expert, target_rank=self.rank, config=config)
        with torch.no_grad():
            for name, param in expert.named_parameters():
                if f".{SLOT_ADAPTER}." in name:
                    # peft gives the slot the base layer's dtype: float8 under fp8 storage, which no
                    # casting hook upcasts; keep it in the compute dtype (it is small)
                    param.data = torch.zeros_like(param, dtype=self.dtype)
                    param.requires_grad_(False)  # inference only

    def keep(self, lora: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """A file's LoRA tensors as the slot copies them: on the device, in the compute dtype."""
        return {key: value.to(device, self.dtype) for key, value in lora.items()}

    def stack(self, loras: Sequence[SlotLora], names: dict[str, str]) -> dict[str, torch.Tensor]:
        """The slot's state dict holding ``loras`` (scales folded into B and the bias), checked
        against the slot's rank; ``names`` maps adapter names to what the client called them."""
        modules: dict[str, list[tuple[str, dict[str, torch.Tensor], float]]] = {}
        for adapter, tensors, scale in loras:
            for key, value in tensors.items():
                module, _, part = key.partition(".lora_")
                parts = modules.setdefault(module, [])
                if not parts or parts[-1][0] != adapter:
                    parts.append((adapter, {}, scale))
                parts[-1][1]["lora_" + part] = value
        over = sorted(
            (-total, module)
            for module, parts in modules.items()
            if (total := sum(p["lora_A.weight"].shape[0] for _, p, _ in parts)) > self.rank
        )
        if over:
            total, module = -over[0][0], over[0][1]
            files = ", ".join(dict.fromkeys(names.get(a, a) for a, _, _ in modules[module]))
            raise LoraError(
                f"{files} need rank {total} on {module} ({len(over)} layers over); this worker compiles its "
                f"experts with LoRA rank up to {self.rank} per layer ({RANK_SETTING}); use fewer or smaller LoRAs"
            )
        state: dict[str, torch.Tensor] = {}
        for module, parts in modules.items():
            state[f"{module}.lora_A.{SLOT_ADAPTER}.weight"] = torch.cat(
                [p["lora_A.weight"] for _, p, _ in parts]
            )
            state[f"{module}.lora_B.{SLOT_ADAPTER}.weight"] = torch.cat(
                [p["lora_B.weight"] * scale for _, p, scale in parts], dim=1
            )
            biases = [p["lora_B.bias"] * scale for _, p, scale in parts if "lora_B.bias" in p]
            if biases:
                state[f"{module}.lora_B.{SLOT_ADAPTER}.bias"] = torch.stack(biases).sum(0)
        return state

    def swap(
        self, expert: Expert, transformer: torch.nn.Module, loras: Sequence[SlotLora], names: dict[str, str]
    ) -> None:
        """Write ``loras`` into ``transformer``'s slot in place (nothing to do if it holds them)."""
        holding = tuple((adapter, scale) for adapter, _, scale in loras)
        if self._holding.get(expert) == holding:
            return
        state = self.stack(loras, names)  # may refuse: the slot is untouched then
        self._holding.pop(expert, None)  # unknown until the swap is through
        config = LoraConfig(r=self.rank, lora_alpha=self.rank, lora_bias=True)  # scaling 1
        with torch.no_grad():
            hotswap_adapter_from_state_dict(transformer, state, SLOT_ADAPTER, config)
        self._holding[expert] = holding


def prepare_slots(experts: Sequence[torch.nn.Module], *, max_lora_rank: int, dtype: torch.dtype) -> LoraSlots:
    """The LoRA slot on each expert (none at ``max_lora_rank`` 0: LoRAs refused).

    Before any torchao conversion (``WANFORGE_FP8=compute``): peft wraps a torchao-quantized
    linear in its ``TorchaoLoraLinear``, which refuses the slot's ``lora_bias``. Put in first, the
    slot wraps plain linears, and the fp8 filter then converts their ``base_layer`` only
    (:func:`wanforge.engine.fp8.fp8_linear_filter` skips the slot's own A and B).
    """
    slots = LoraSlots(max_lora_rank, dtype)
    if slots.rank:
        for expert in experts:
            slots.prepare(expert)
    return slots


def compile_experts(experts: Sequence[ModelMixin], *, backend: str) -> None:
    """Regional compile of each expert (last: the graphs see the final modules, slots included)."""
    for expert in experts:
        expert.compile_repeated_blocks(fullgraph=True, backend=backend)
