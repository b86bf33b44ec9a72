"""LoRA adapters on a resident model: checked against the experts, cached by content hash,
switched per request.

Each (file hash, expert) is loaded once as a peft adapter into that expert's transformer
(``transformer`` = high_noise, ``transformer_2`` = low_noise) with diffusers'
``load_lora_weights``, and kept in an LRU of ``capacity`` entries; an evicted one is deleted
from the model. A request activates exactly its adapters with its scales (``set_adapters`` per
transformer), runs, and deactivates them again (no active adapter: peft's layers then compute
exactly the base layer), so a job without LoRAs after one with LoRAs gives the base frames.

Full deltas (LightX2V's ``.diff``/``.diff_b``/``.diff_m``) cannot be a peft adapter: they are
added to the base parameters for the request, ``W + scale * diff`` (as ComfyUI does), and the
original tensors of exactly those parameters are copied back afterwards, so the base stays exact.

Under regional compile (``slots``, see :mod:`wanforge.engine.compile`) the LRU holds each file's
checked LoRA tensors on the device instead of a peft adapter in the model, and a request writes its
files into each expert's one compiled LoRA slot (peft hot-swap): changing LoRAs never recompiles.
Deltas work the same on both paths.
"""

from __future__ import annotations

import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from wanforge.engine.compile import LoraSlots, SlotLora
from wanforge.engine.lora_formats import LoraFormat, ParsedLora, read_lora
from wanforge.engine.loras import EXPERT_ORDER, TRANSFORMER_OF, Expert, LoraError, LoraRequest, list_keys

CacheKey = tuple[str, Expert]  # (sha256, expert)

_LORA_PART = re.compile(r"(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias)")
_SHA256 = re.compile(r"[0-9a-f]{16,64}")


@dataclass(frozen=True)
class FittedLora:
    """A parsed file checked against one transformer: what loads, and notes on what was skipped."""

    lora: dict[str, torch.Tensor]  # diffusers names, shapes verified
    deltas: dict[str, torch.Tensor]  # base parameter name -> delta of its exact shape
    notes: list[str]


def _linear(transformer: torch.nn.Module, module_name: str) -> torch.nn.Linear | None:
    try:
        module = transformer.get_submodule(module_name)
    except AttributeError:
        return None
    base = getattr(module, "base_layer", module)  # a linear that already carries LoRA layers
    return base if isinstance(base, torch.nn.Linear) else None


def base_parameter(transformer: torch.nn.Module, name: str) -> torch.nn.Parameter | None:
    """The base model's parameter ``name`` (``blocks.0.norm2.weight``), under any LoRA wrapper."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = transformer.get_submodule(module_name) if module_name else transformer
    except AttributeError:
        return None
    param = getattr(getattr(module, "base_layer", module), attr, None)
    return param if isinstance(param, torch.nn.Parameter) else None


def _resolve_delta(transformer: torch.nn.Module, name: str) -> str | None:
    """``X.weight`` for a ``.diff`` key, or ``X`` itself where X is a bare parameter (a modulation table)."""
    if base_parameter(transformer, name) is not None:
        return name
    bare = name.removesuffix(".weight")
    if bare != name and base_parameter(transformer, bare) is not None:
        return bare
    return None


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(n) for n in t.shape)


def fit_to_model(parsed: ParsedLora, transformer: torch.nn.Module, name: str) -> FittedLora:
    """Check every converted tensor against ``transformer``'s layers before anything is loaded.

    Keys for layers the model lacks are skipped (and noted); a tensor whose shape does not fit
    its layer means a LoRA for another model and raises :class:`LoraError`, as does a file of
    which nothing matches.
    """
    modules: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unmatched: list[str] = []
    for key, value in parsed.lora.items():
        match = _LORA_PART.fullmatch(key)
        if match is None:
            unmatched.append(key)
        else:
            modules.setdefault(match["module"], {})[match["part"]] = (key, value)

    lora: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for module_name, parts in sorted(modules.items()):
        linear = _linear(transformer, module_name)
        if linear is None or "lora_A.weight" not in parts or "lora_B.weight" not in parts:
            unmatched.extend(key for key, _ in parts.values())
            continue
        rank = parts["lora_A.weight"][1].shape[0]
        expected = {
            "lora_A.weight": (rank, linear.in_features),
            "lora_B.weight": (linear.out_features, rank),
            "lora_B.bias": (linear.out_features,),
        }
        bad = [
            f"{key} is {_shape(value)}, the layer needs {'x'.join(map(str, expected[part]))}"
            for part, (key, value) in parts.items()
            if tuple(value.shape) != expected[part]
        ]
        if bad:
            mismatched.extend(bad)
        else:
            lora.update({key: value for key, value in parts.values()})

    deltas: dict[str, torch.Tensor] = {}
    for key, value in sorted(parsed.deltas.items()):
        resolved = _resolve_delta(transformer, key)
        if resolved is None:
            unmatched.append(key)
            continue
        param = base_parameter(transformer, resolved)
        assert param is not None
        if tuple(value.shape) != tuple(param.shape):
            mismatched.append(f"{key} is {_shape(value)}, the model's is {_shape(param)}")
        else:
            deltas[resolved] = value

    if mismatched:
        raise LoraError(
            f"{name} does not fit this model (a LoRA for another model?): {len(mismatched)} tensors "
            f"have other shapes: {list_keys(mismatched)}"
        )
    if not lora and not deltas:
        raise LoraError(
            f"{name} has no key that matches a layer of this model ({parsed.format} format, "
            f"{len(parsed.keys)} keys): {list_keys(parsed.keys)}"
        )
    skipped = sorted(parsed.unknown) + sorted(unmatched)
    notes = list(parsed.warnings) + (
        [f"{name}: skipped {len(skipped)} tensors that match no layer of this model: {list_keys(skipped)}"]
        if skipped
        else []
    )
    return FittedLora(lora=lora, deltas=deltas, notes=notes)


@dataclass(frozen=True)
class LoadedAdapter:
    """One file loaded into one expert."""

    sha256: str
    expert: Expert
    format: LoraFormat
    adapter_name: str | None  # the peft adapter in the expert's transformer; None: deltas only
    deltas: dict[str, torch.Tensor]  # on the CPU, by base parameter name
    notes: list[str]
    # under compile: the LoRA tensors the slot copies (adapter_name names them; not in the model)
    slot_lora: dict[str, torch.Tensor] | None = None


@dataclass
class AppliedLoras:
    """What a request ran with: one entry per applied file per expert, notes, and timings."""

    adapters: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_s: float = 0.0
    activate_s: float = 0.0


def adapter_name_for(sha256: str) -> str:
    """The peft adapter name of a file: its hash, shortened (one name per transformer)."""
    if _SHA256.fullmatch(sha256) is None:
        raise ValueError(f"sha256 must be lowercase hex, got {sha256!r}")
    return f"wf_{sha256[:24]}"


class AdapterCache:
    """The LRU of loaded adapters of one pipeline, and the per-request switch.

    ``capacity`` counts (file, expert) entries; the adapters one request uses are never evicted
    during it, so the cache may hold more until the next request. ``allow_deltas=False`` refuses
    files with full deltas (group offload streams weights from copies we cannot patch; float8
    weights), saying ``no_deltas_reason``. ``slots``: the compiled experts' LoRA slots.
    """

    def __init__(
        self,
        pipe: WanImageToVideoPipeline,
        capacity: int = 8,
        *,
        allow_deltas: bool = True,
        adapter_dtype: torch.dtype | None = None,
        clock: Callable[[], float] = time.perf_counter,
        slots: LoraSlots | None = None,
        no_deltas_reason: str = "this worker's memory mode (group_offload)",
    ) -> None:
        if capacity < 0:
            raise ValueError(f"lora_cache_size must be >= 0, got {capacity}")
        self.pipe = pipe
        self.capacity = capacity
        self.allow_deltas = allow_deltas
        self.adapter_dtype = adapter_dtype
        self.clock = clock
        self.slots = slots
        self.no_deltas_reason = no_deltas_reason
        self._entries: OrderedDict[CacheKey, LoadedAdapter] = OrderedDict()

    def transformer(self, expert: Expert) -> torch.nn.Module:
        module: torch.nn.Module = getattr(self.pipe, TRANSFORMER_OF[expert])
        return module

    def keys(self) -> list[CacheKey]:
        """Cached entries, least recently used first."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _present(self, entry: LoadedAdapter) -> bool:
        """False if someone else removed the adapter from the model (``unload_lora`` in training)."""
        if entry.adapter_name is None or entry.slot_lora is not None:
            return True
        return entry.adapter_name in getattr(self.transformer(entry.expert), "peft_config", {})

    def _load_one(self, parsed: ParsedLora, req: LoraRequest, expert: Expert) -> LoadedAdapter:
        transformer = self.transformer(expert)
        fitted = fit_to_model(parsed, transformer, req.name)
        if fitted.deltas and not self.allow_deltas:
            raise LoraError(
                f"{req.name} carries full weight deltas (.diff), which {self.no_deltas_reason} cannot apply"
            )
        adapter_name = None
        slot_lora = None
        if fitted.lora and self.slots is not None:
            adapter_name = adapter_name_for(req.sha256)
            if not self.slots.rank:
                raise LoraError(
                    f"{req.name}: this worker compiles its experts without LoRA slots "
                    "(WANFORGE_COMPILE_MAX_LORA_RANK=0)"
                )
            device = next(transformer.parameters()).device
            slot_lora = self.slots.keep(fitted.lora, device)
        elif fitted.lora:
            adapter_name = adapter_name_for(req.sha256)
            if adapter_name in getattr(transformer, "peft_config", {}):  # left by an earlier cache
                transformer.delete_adapters(adapter_name)  # type: ignore[operator]
            with warnings.catch_warnings():  # many adapters in one model is the point of the cache
                warnings.filterwarnings(
                    "ignore", message="Already found a `peft_config`", category=UserWarning
                )
                self.pipe.load_lora_weights(
                    {f"transformer.{k}": v for k, v in fitted.lora.items()},
                    adapter_name=adapter_name,
                    load_into_transformer_2=expert == "low_noise",
                )
            if self.adapter_dtype is not None:
                # peft gives new LoRA weights the base layer's dtype; under fp8 storage that is
                # float8, which diffusers' casting hooks (set at load) never upcast: keep them in
                # the compute dtype instead (they are small).
                for name, param in transformer.named_parameters():
                    if f".{adapter_name}." in name:
                        param.data = param.data.to(self.adapter_dtype)
            # peft makes a freshly wrapped layer's new adapter active: inactive until a request asks
            transformer.set_adapters([], [])  # type: ignore[operator]
        deltas = {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in fitted.deltas.items()}
        return LoadedAdapter(req.sha256, expert, parsed.format, adapter_name, deltas, fitted.notes, slot_lora)

    def load(self, requests: Sequence[LoraRequest]) -> dict[CacheKey, LoadedAdapter]:
        """Make sure every (file, expert) the requests name is loaded; mark them recently used."""
        wanted = [(req, expert) for req in requests for expert in EXPERT_ORDER if expert in req.experts]
        parsed: dict[str, ParsedLora] = {}
        for req, expert in wanted:
            key = (req.sha256, expert)
            entry = self._entries.get(key)
            if entry is not None and not self._present(entry):
                del self._entries[key]
                entry = None
            if entry is None:
                if req.sha256 not in parsed:
                    parsed[req.sha256] = read_lora(req.file, req.name)
                self._entries[key] = self._load_one(parsed[req.sha256], req, expert)
            self._entries.move_to_end(key)
        in_use = {(req.sha256, expert) for req, expert in wanted}
        self._evict(keep=in_use)
        return {key: self._entries[key] for key in in_use}

    def _evict(self, keep: set[CacheKey]) -> None:
        for key in list(self._entries):
            if len(self._entries) <= self.capacity:
                break
            if key not in keep:
                self._drop(key)

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key)
        if entry.adapter_name is None or entry.slot_lora is not None or not self._present(entry):
            return
        transformer = self.transformer(entry.expert)
        transformer.delete_adapters(entry.adapter_name)  # type: ignore[operator]
        if not getattr(transformer, "peft_config", None):
            transformer.unload_lora()  # type: ignore[operator]  # the plain linears again

    def clear(self) -> None:
        """Delete every cached adapter from the model (before training on the same pipeline)."""
        for key in list(self._entries):
            self._drop(key)

    @contextmanager
    def applied(self, requests: Sequence[LoraRequest]) -> Iterator[AppliedLoras]:
        """Load, activate exactly ``requests`` with their scales, yield, then deactivate."""
        started = self.clock()
        loaded = self.load(requests)
        loaded_at = self.clock()
        result, weights, deltas = _activation_plan(requests, loaded)
        result.load_s = loaded_at - started if requests else 0.0
        originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            for expert in EXPERT_ORDER:
                transformer = self.transformer(expert)
                if self.slots is not None:
                    slot_loras, names = _slot_loras(requests, loaded, weights[expert], expert)
                    self.slots.swap(expert, transformer, slot_loras, names)
                elif getattr(transformer, "peft_config", None):
                    active = list(weights[expert])
                    scales = [weights[expert][n] for n in active]
                    transformer.set_adapters(active, scales)  # type: ignore[operator]
                originals.extend(_add_deltas(transformer, deltas[expert]))
            result.activate_s = self.clock() - loaded_at if requests else 0.0
            yield result
        finally:
            with torch.no_grad():
                for touched, original in originals:
                    touched.data.copy_(original)
            for expert in EXPERT_ORDER:
                transformer = self.transformer(expert)
                if self.slots is None and getattr(transformer, "peft_config", None):
                    transformer.set_adapters([], [])  # type: ignore[operator]  # no active adapter: the base layers


def _activation_plan(
    requests: Sequence[LoraRequest], loaded: dict[CacheKey, LoadedAdapter]
) -> tuple[AppliedLoras, dict[Expert, dict[str, float]], dict[Expert, dict[str, torch.Tensor]]]:
    """Per expert: adapter name -> summed scale, base parameter -> summed scaled delta; and the
    report (one entry per file per expert, notes once each). A file named twice adds up."""
    result = AppliedLoras()
    weights: dict[Expert, dict[str, float]] = {e: {} for e in EXPERT_ORDER}
    deltas: dict[Expert, dict[str, torch.Tensor]] = {e: {} for e in EXPERT_ORDER}
    for req in requests:
        for expert in EXPERT_ORDER:
            if expert not in req.experts:
                continue
            entry = loaded[(req.sha256, expert)]
            if entry.adapter_name is not None:
                scales = weights[expert]
                scales[entry.adapter_name] = scales.get(entry.adapter_name, 0.0) + req.scale
            for name, delta in entry.deltas.items():
                total = deltas[expert].get(name)
                deltas[expert][name] = delta * req.scale if total is None else total + delta * req.scale
            result.adapters.append(
                {
                    "sha256": req.sha256,
                    "name": req.name,
                    "scale": req.scale,
                    "expert": expert,
                    "format": entry.format,
                }
            )
            result.notes.extend(n for n in entry.notes if n not in result.notes)
    return result, weights, deltas


def _slot_loras(
    requests: Sequence[LoraRequest],
    loaded: dict[CacheKey, LoadedAdapter],
    weights: dict[str, float],
    expert: Expert,
) -> tuple[list[SlotLora], dict[str, str]]:
    """What one expert's slot holds for a request (in the order of ``weights``), and the files' names."""
    entries = {e.adapter_name: e for (_, ex), e in loaded.items() if ex == expert and e.slot_lora is not None}
    names = {adapter_name_for(req.sha256): req.name for req in requests}
    loras: list[SlotLora] = []
    for adapter, scale in weights.items():
        lora = entries[adapter].slot_lora
        assert lora is not None
        loras.append((adapter, lora, scale))
    return loras, names


def _add_deltas(
    transformer: torch.nn.Module, deltas: dict[str, torch.Tensor]
) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """``W += delta`` for each named base parameter (summed in float32, cast once); the
    original tensors are returned for the restore."""
    originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    with torch.no_grad():
        for name, delta in deltas.items():
            param = base_parameter(transformer, name)
            assert param is not None  # checked by fit_to_model when loaded
            original = param.detach().clone()
            originals.append((param, original))
            param.data.copy_((original.float() + delta.to(param.device)).to(param.dtype))
    return originals


def held_files(cache: AdapterCache) -> frozenset[str]:
    """The sha256 of each LoRA file `cache` holds loaded (into either expert), read-only: what a
    worker tells the store it would rather run next (LoRA affinity, `wanforge.store.affinity`).
    An adapter someone else removed from the model (training's ``unload_lora``) is not held."""
    return frozenset(key[0] for key, entry in cache._entries.items() if cache._present(entry))
