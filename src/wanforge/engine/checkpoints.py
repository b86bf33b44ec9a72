"""Checkpoints in the layouts people already have, besides a diffusers directory.

- a model file (:mod:`wanforge.engine.model_file`) naming single files: ComfyUI's repackaged
  experts, text encoder and VAE, a GGUF expert, or pieces of the official layout;
- the official ``Wan-AI/Wan2.2-I2V-A14B`` directory: ``high_noise_model/`` and
  ``low_noise_model/`` (sharded safetensors and a Wan ``config.json``),
  ``models_t5_umt5-xxl-enc-bf16.pth``, ``Wan2.1_VAE.pth`` and the tokenizer in ``google/umt5-xxl/``.

Each file's format is told by its content, never its name: GGUF (its magic), safetensors (its
header), or a PyTorch zip (``torch.load(weights_only=True)``: tensors only, never arbitrary
unpickling). Tensor names may be Wan's original ones (with or without ComfyUI's
``model.diffusion_model.`` prefix), transformers' (umT5) or diffusers' own; diffusers' converters
(``convert_wan_transformer_to_diffusers``, ``convert_wan_vae_to_diffusers``) rename the first,
:data:`wan_keys.WAN_T5_TO_HF_BLOCK` Wan's umT5 names (diffusers has no converter for those).
Weights may be fp32, bf16, fp16, ComfyUI's fp8-scaled (dequantized at load:
:mod:`wanforge.engine.fp8_scaled`) or GGUF (experts only, through diffusers' ``GGUFQuantizationConfig``:
the weights stay quantized and are dequantized per layer at compute time).

Configs come from the ``diffusers`` directory a model file names, from the official layout's Wan
``config.json``, or else from the A14B configs in :mod:`wanforge.engine.random_model`; nothing is
ever downloaded. Every piece is checked against its model before it is loaded, and every
problem raises one :class:`~wanforge.engine.loading.ModelLoadError` naming the piece.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import init_empty_weights
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from wanforge.engine import wan_keys
from wanforge.engine.demo import build_scheduler
from wanforge.engine.fp8_scaled import dequantize_fp8_scaled, is_fp8_scaled
from wanforge.engine.loading import ModelLoadError
from wanforge.engine.model_file import ModelFileError, is_model_file, read_model_file
from wanforge.engine.random_model import A14B_EXPERT, A14B_VAE, UMT5_XXL, cast_as_loaded

Role = Literal["high_noise", "low_noise"]
Format = Literal["safetensors", "gguf", "pytorch"]
EXPERT_SUBFOLDER: dict[Role, str] = {"high_noise": "transformer", "low_noise": "transformer_2"}
OFFICIAL_EXPERT_DIR: dict[Role, str] = {"high_noise": "high_noise_model", "low_noise": "low_noise_model"}
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_VAE = "Wan2.1_VAE.pth"
OFFICIAL_TOKENIZER = "google/umt5-xxl"
_ROLE_WORDS: dict[Role, re.Pattern[str]] = {
    "high_noise": re.compile(r"high[ _.-]?noise", re.IGNORECASE),
    "low_noise": re.compile(r"low[ _.-]?noise", re.IGNORECASE),
}


@dataclass(frozen=True)
class Sources:
    """Where each piece comes from: files (``None``: from the diffusers directory)."""

    high_noise: tuple[Path, ...] | None
    low_noise: tuple[Path, ...] | None
    text_encoder: Path | None
    vae: Path | None
    tokenizer: Path | None
    diffusers: Path | None
    expert_config: dict[str, Any] | None  # from a Wan config.json (the official layout)

    def expert(self, role: Role) -> tuple[Path, ...] | None:
        return self.high_noise if role == "high_noise" else self.low_noise


def is_official_layout(path: Path) -> bool:
    """A directory with an expert folder of the official layout (and no ``model_index.json``):
    one folder alone is an incomplete official layout, reported as such."""
    if not path.is_dir() or (path / "model_index.json").exists():
        return False
    return any((path / d).is_dir() for d in OFFICIAL_EXPERT_DIR.values())


def handles(path: Path) -> bool:
    """Whether ``--model path`` is a model file or the official layout (else: a diffusers directory)."""
    return is_model_file(path) or is_official_layout(path)


def load(path: Path, dtype: torch.dtype) -> WanImageToVideoPipeline:
    """The pipeline from a model file or the official layout, experts and text encoder in
    ``dtype``, the VAE in float32 (as for a diffusers directory)."""
    sources = _official_sources(path) if is_official_layout(path) else _model_file_sources(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`dtype`.*", category=FutureWarning)
        tokenizer = _load_tokenizer(sources)
        scheduler = (
            UniPCMultistepScheduler.from_pretrained(sources.diffusers, subfolder="scheduler")
            if sources.diffusers is not None
            else build_scheduler()  # the Wan 2.2 UniPC flow config; the engine sets the shift
        )
        experts = {role: load_expert(sources, role, dtype) for role in ("high_noise", "low_noise")}
        text_encoder = load_text_encoder(sources, dtype)
        vae = load_vae(sources)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,  # type: ignore[arg-type]  # diffusers annotates FlowMatch; UniPC is the real one
        transformer=experts["high_noise"],
        transformer_2=experts["low_noise"],
        boundary_ratio=0.9,
    )


# --- where the pieces are


def _model_file_sources(path: Path) -> Sources:
    try:
        spec = read_model_file(path)
    except ModelFileError as exc:
        raise ModelLoadError(str(exc)) from exc
    if spec.diffusers is not None:
        _check_diffusers_dir(spec.diffusers, spec.tokenizer is not None)
    return Sources(
        high_noise=(spec.high_noise,) if spec.high_noise else None,
        low_noise=(spec.low_noise,) if spec.low_noise else None,
        text_encoder=spec.text_encoder,
        vae=spec.vae,
        tokenizer=spec.tokenizer,
        diffusers=spec.diffusers,
        expert_config=None,
    )


def _check_diffusers_dir(directory: Path, tokenizer_named: bool) -> None:
    """The diffusers directory gives the configs of every piece (the pieces' weights only where
    the model file names none), the scheduler, and the tokenizer unless one is named."""
    wanted = ["scheduler", "text_encoder", "transformer", "transformer_2", "vae"]
    wanted += [] if tokenizer_named else ["tokenizer"]
    missing = [sub for sub in wanted if not (directory / sub).is_dir()]
    if missing:
        raise ModelLoadError(f"diffusers directory {directory} has no {', '.join(f'{m}/' for m in missing)}")


def _official_sources(path: Path) -> Sources:
    problems: list[str] = []
    shards: dict[Role, tuple[Path, ...]] = {}
    for role, sub in OFFICIAL_EXPERT_DIR.items():
        files = tuple(sorted((path / sub).glob("*.safetensors")))
        if not files:
            problems.append(f"{sub}/ has no .safetensors files")
        shards[role] = files
    config_path = path / OFFICIAL_EXPERT_DIR["high_noise"] / "config.json"
    for name in (OFFICIAL_T5, OFFICIAL_VAE, OFFICIAL_TOKENIZER, config_path.relative_to(path)):
        if not (path / name).exists():
            problems.append(f"{name} is missing")
    if problems:
        raise ModelLoadError(f"{path} is not a usable Wan2.2-I2V-A14B directory: " + "; ".join(problems))
    return Sources(
        high_noise=shards["high_noise"],
        low_noise=shards["low_noise"],
        text_encoder=path / OFFICIAL_T5,
        vae=path / OFFICIAL_VAE,
        tokenizer=path / OFFICIAL_TOKENIZER,
        diffusers=None,
        expert_config=_wan_config_to_diffusers(_read_json(config_path), config_path),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def _wan_config_to_diffusers(wan: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """Wan's ``config.json`` (WanModel's arguments) as ``WanTransformer3DModel``'s."""
    if wan.get("model_type", "i2v") != "i2v":
        raise ModelLoadError(f"{where}: model_type is {wan.get('model_type')!r}, expected 'i2v'")
    try:
        dim, heads = int(wan["dim"]), int(wan["num_heads"])
        return {
            **A14B_EXPERT,
            "num_attention_heads": heads,
            "attention_head_dim": dim // heads,
            "in_channels": int(wan["in_dim"]),
            "out_channels": int(wan["out_dim"]),
            "text_dim": int(wan.get("text_dim", A14B_EXPERT["text_dim"])),
            "freq_dim": int(wan["freq_dim"]),
            "ffn_dim": int(wan["ffn_dim"]),
            "num_layers": int(wan["num_layers"]),
            "eps": float(wan.get("eps", 1e-6)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{where} is not a Wan model config: {exc!r}") from exc


def _expert_config(sources: Sources, role: Role) -> dict[str, Any]:
    if sources.diffusers is not None:
        config = _read_json(sources.diffusers / EXPERT_SUBFOLDER[role] / "config.json")
        return {k: v for k, v in config.items() if not k.startswith("_")}
    return dict(sources.expert_config or A14B_EXPERT)


# --- reading files (format by content)


def file_format(path: Path) -> Format:
    """``gguf``, ``safetensors`` or ``pytorch`` (a zip from ``torch.save``), from the first bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if head[:4] == b"GGUF":
        return "gguf"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if zipfile.is_zipfile(path):
        return "pytorch"
    raise ModelLoadError(f"{path.name} is not a safetensors, GGUF or PyTorch (.pth) file")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and text metadata of a safetensors or PyTorch file."""
    kind = file_format(path)
    try:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = dict(f.metadata() or {})
                return {key: f.get_tensor(key) for key in f.keys()}, metadata  # noqa: SIM118
        if kind == "pytorch":
            # tensors and plain containers only: weights_only never runs code from the file
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), dict):
                data = next(iter(data.values()))  # {"state_dict": {...}} or {"model": {...}}
            if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
                raise ModelLoadError(f"{path.name} does not hold a state dict of tensors")
            return dict(data), {}
    except ModelLoadError:
        raise
    except Exception as exc:  # corrupt files surface as many error types
        raise ModelLoadError(f"cannot read {path.name}: {exc}") from exc
    raise ModelLoadError(f"{path.name}: GGUF is read only for the experts")


def _read_all(paths: tuple[Path, ...]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for path in paths:
        part, meta = read_tensors(path)
        tensors.update(part)
        metadata.update(meta)
    return tensors, metadata


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if not any(key.startswith(prefix) for key in state_dict):
        return state_dict
    return {key.removeprefix(prefix): value for key, value in state_dict.items() if key.startswith(prefix)}


# --- experts


def _role_of(texts: list[str]) -> Role | None:
    """What names or metadata say an expert is: the one role named, else ``None``."""
    said = {role for role, pattern in _ROLE_WORDS.items() if any(pattern.search(t) for t in texts)}
    return said.pop() if len(said) == 1 else None


def _check_role(role: Role, paths: tuple[Path, ...], metadata: Mapping[str, str]) -> None:
    # the file names, not their folders (a folder may hold both experts; the official layout's
    # folders decide the role themselves)
    said = _role_of([p.name for p in paths] + [str(v) for v in metadata.values()])
    if said is not None and said != role:
        raise ModelLoadError(
            f"{role}: {paths[0].name} is the {said.replace('_', '-')} expert by its name or metadata "
            f"(high_noise and low_noise swapped?)"
        )


def _to_diffusers_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan names (with or without ComfyUI's prefix) or diffusers names -> diffusers."""
    state_dict = _strip_prefix(state_dict, wan_keys.COMFY_PREFIX)
    state_dict = _strip_prefix(state_dict, "transformer.")
    if any(".self_attn." in key or key.startswith("head.") for key in state_dict):
        return dict(convert_wan_transformer_to_diffusers(dict(state_dict)))
    return state_dict


def _expert_problem(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    """Why ``state_dict`` (diffusers names) is not an expert for ``model``, or ``None``."""
    if any("add_k_proj" in key or "image_embedder" in key for key in state_dict):
        return "this is a Wan 2.1 image-to-video expert (it has a CLIP image branch); Wan 2.2 A14B has none"
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    patch = state_dict.get("patch_embedding.weight")
    want_patch = expected["patch_embedding.weight"]
    if patch is not None and tuple(patch.shape) != want_patch:
        dim, channels = patch.shape[0], patch.shape[1] if patch.dim() > 1 else 0
        kind = {
            (3072, 48): "a Wan 2.2 TI2V 5B model",
            (1536, 16): "a Wan 2.1 1.3B text-to-video model",
            (1536, 36): "a Wan 2.1 1.3B image-to-video model",
        }.get((dim, channels))
        if kind is None and channels == 16:
            kind = "a text-to-video expert (16 input channels; image-to-video has 36)"
        what = kind or f"width {dim} with {channels} input channels"
        return (
            f"this is {what}, not an expert of this model (width {want_patch[0]}, {want_patch[1]} channels)"
        )
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} is {'x'.join(map(str, state_dict[k].shape))}, expected {'x'.join(map(str, expected[k]))}"
        for k in sorted(set(expected) & set(state_dict))
        if not _quantized(state_dict[k]) and tuple(state_dict[k].shape) != expected[k]
    ]
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
    layers = int(getattr(model.config, "num_layers", 0))
    problems = []
    if blocks and max(blocks) + 1 != layers:
        problems.append(f"it has {max(blocks) + 1} blocks, the model {layers}")
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:5]))
    if missing:
        problems.append(f"{len(missing)} tensors missing: {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown tensors: {unexpected[:5]}")
    return ", ".join(problems) or None


def _quantized(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "quant_type") and tensor.dtype == torch.uint8


def load_expert(sources: Sources, role: Role, dtype: torch.dtype) -> WanTransformer3DModel:
    """One expert, from its files or from the diffusers directory."""
    paths = sources.expert(role)
    if paths is None:
        assert sources.diffusers is not None
        try:
            model: WanTransformer3DModel = WanTransformer3DModel.from_pretrained(
                sources.diffusers, subfolder=EXPERT_SUBFOLDER[role], torch_dtype=dtype
            )
        except Exception as exc:
            raise ModelLoadError(f"{role}: failed to load {EXPERT_SUBFOLDER[role]}/: {exc}") from exc
        return model
    config = _expert_config(sources, role)
    if len(paths) == 1 and file_format(paths[0]) == "gguf":
        return _load_gguf_expert(paths[0], role, config, dtype)
    state_dict, metadata = _read_all(paths)
    _check_role(role, paths, metadata)
    if is_fp8_scaled(state_dict):
        state_dict = dequantize_fp8_scaled(state_dict, dtype)
    state_dict = _to_diffusers_names(state_dict)
    # Not from_single_file here (it is used for GGUF, which needs its quantizer): for bf16 it casts
    # every parameter, where from_pretrained keeps the class's _keep_in_fp32_modules (norms, time
    # embedder, modulation) in float32, so a single file would not compute as the diffusers
    # directory does; and it only warns about tensors it did not use. diffusers' converter does
    # the renaming; the expert is checked, then assigned in from_pretrained's dtypes.
    with init_empty_weights():  # parameters on the meta device; the rotary buffers are computed
        model = cast_as_loaded(WanTransformer3DModel.from_config(config), dtype)
    problem = _expert_problem(state_dict, model)
    if problem:
        raise ModelLoadError(f"{role} ({paths[0].name}): {problem}")
    return _assign(model, state_dict).eval()


def _assign(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> Any:
    """Load ``state_dict`` into a meta ``model``, each tensor in its parameter's dtype (the
    dtypes a diffusers ``from_pretrained`` gives: see ``random_model.cast_as_loaded``).
    ``state_dict`` is emptied as it goes, so a file in another dtype (fp16 for a bf16 model:
    a 28 GB expert) is never held twice."""
    wanted = model.state_dict()
    cast: dict[str, torch.Tensor] = {}
    for key in list(state_dict):
        cast[key] = state_dict.pop(key).to(dtype=wanted[key].dtype).contiguous()
    model.load_state_dict(cast, strict=True, assign=True)
    return model


def _gguf_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """diffusers' GGUF reader, plus what it leaves out: ComfyUI-GGUF stores tensors of more than
    4 dimensions (the patch embedding) reshaped, with the real shape in the metadata."""
    import gguf
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    try:
        tensors: dict[str, torch.Tensor] = load_gguf_checkpoint(str(path))
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path.name}: {exc}") from exc
    metadata: dict[str, str] = {}
    for name, field in reader.fields.items():
        if name.startswith(wan_keys.GGUF_ORIG_SHAPE):
            key = name.removeprefix(wan_keys.GGUF_ORIG_SHAPE)
            shape = tuple(int(field.parts[i][0]) for i in field.data)
            if key in tensors and not _quantized(tensors[key]):
                tensors[key] = tensors[key].reshape(shape)
        elif field.types == [gguf.GGUFValueType.STRING]:
            metadata[name] = bytes(field.parts[field.data[-1]]).decode("utf-8", errors="replace")
    arch = metadata.get("general.architecture")
    if arch not in (None, wan_keys.GGUF_ARCHITECTURE):
        raise ModelLoadError(f"{path.name}: a GGUF file of architecture {arch!r}, expected 'wan'")
    return tensors, metadata


def _load_gguf_expert(
    path: Path, role: Role, config: dict[str, Any], dtype: torch.dtype
) -> WanTransformer3DModel:
    """A GGUF expert through diffusers' single-file loader and ``GGUFQuantizationConfig``: the
    linear weights stay quantized (``GGUFLinear`` dequantizes them per call in ``dtype``)."""
    from diffusers import GGUFQuantizationConfig

    tensors, metadata = _gguf_tensors(path)
    _check_role(role, (path,), metadata)
    state_dict = _to_diffusers_names(tensors)
    with init_empty_weights():
        reference = WanTransformer3DModel.from_config(config)
    problem = _expert_problem(state_dict, reference)
    if problem:
        raise ModelLoadError(f"{role} ({path.name}): {problem}")
    # from_single_file wants its config as a directory; write the one chosen above (no download)
    with tempfile.TemporaryDirectory(prefix="wanforge-config-") as config_dir:
        (Path(config_dir) / "config.json").write_text(
            json.dumps({"_class_name": "WanTransformer3DModel", **config}), encoding="utf-8"
        )
        try:
            model: WanTransformer3DModel = WanTransformer3DModel.from_single_file(
                state_dict,
                config=config_dir,
                quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
                torch_dtype=dtype,
                local_files_only=True,
            )
        except Exception as exc:
            raise ModelLoadError(f"{role} ({path.name}): {exc}") from exc
    return model.eval()


# --- text encoder, VAE, tokenizer


def _t5_to_hf_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's umT5 names (the .pth) or transformers' (ComfyUI) -> ``UMT5EncoderModel``'s.
    Written by hand: neither diffusers nor transformers converts Wan's T5 names."""
    if "token_embedding.weight" in state_dict:
        out: dict[str, torch.Tensor] = {}
        for key, value in state_dict.items():
            if key in wan_keys.WAN_T5_TO_HF_TOP:
                out[wan_keys.WAN_T5_TO_HF_TOP[key]] = value
                continue
            match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
            if match is None or match[2] not in wan_keys.WAN_T5_TO_HF_BLOCK:
                out[key] = value  # reported as unknown by the shape check
            else:
                out[f"encoder.block.{match[1]}.{wan_keys.WAN_T5_TO_HF_BLOCK[match[2]]}"] = value
        state_dict = out
    if "shared.weight" not in state_dict and "encoder.embed_tokens.weight" in state_dict:
        state_dict["shared.weight"] = state_dict["encoder.embed_tokens.weight"]
    if "shared.weight" in state_dict:
        state_dict["encoder.embed_tokens.weight"] = state_dict["shared.weight"]  # tied
    return state_dict


def _shape_problems(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} is {'x'.join(map(str, state_dict[k].shape))}, expected {'x'.join(map(str, expected[k]))}"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != expected[k]
    ]
    problems = []
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:5]))
    if missing:
        problems.append(f"{len(missing)} tensors missing: {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unknown tensors: {unexpected[:5]}")
    return ", ".join(problems) or None


def _t5_config(state_dict: Mapping[str, torch.Tensor], name: str) -> UMT5Config:
    """umT5-xxl's config with the sizes the tensors show (all but the bucket distance can be
    read off them; Wan's T5 fixes that at 128, as umT5-xxl's config does)."""
    try:
        vocab, d_model = state_dict["shared.weight"].shape
        buckets, heads = state_dict[
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        ].shape
        inner = state_dict["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
        d_ff = state_dict["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(f"text_encoder ({name}): not a umT5 encoder (no {exc})") from exc
    layers = len({k.split(".")[2] for k in state_dict if k.startswith("encoder.block.")})
    sizes = {"vocab_size": vocab, "d_model": d_model, "num_heads": heads, "d_kv": inner // heads}
    sizes |= {"d_ff": d_ff, "num_layers": layers, "relative_attention_num_buckets": buckets}
    return UMT5Config(**{**UMT5_XXL, **sizes})


def load_text_encoder(sources: Sources, dtype: torch.dtype) -> UMT5EncoderModel:
    if sources.text_encoder is None:
        assert sources.diffusers is not None
        try:
            encoder: UMT5EncoderModel = UMT5EncoderModel.from_pretrained(
                sources.diffusers / "text_encoder", dtype=dtype
            )
        except Exception as exc:
            raise ModelLoadError(f"text_encoder: failed to load text_encoder/: {exc}") from exc
        return encoder.eval()
    path = sources.text_encoder
    if file_format(path) == "gguf":
        raise ModelLoadError(
            f"text_encoder ({path.name}): GGUF text encoders are not supported; use safetensors"
        )
    state_dict, _ = read_tensors(path)
    # ComfyUI's files carry their sentencepiece tokenizer as a tensor; the tokenizer is read from
    # its directory instead (building one from these bytes needs sentencepiece and protobuf)
    state_dict.pop(wan_keys.COMFY_TOKENIZER, None)
    if is_fp8_scaled(state_dict):
        state_dict = dequantize_fp8_scaled(state_dict, dtype)
    state_dict = _t5_to_hf_names(state_dict)
    if sources.diffusers is not None:
        config = UMT5Config.from_pretrained(sources.diffusers / "text_encoder")
    else:
        config = _t5_config(state_dict, path.name)
    with init_empty_weights():
        model = UMT5EncoderModel(config)
    torch.nn.Module.to(model, dtype)  # the meta parameters in the dtype they are loaded in
    problem = _shape_problems(state_dict, model)
    if problem:
        raise ModelLoadError(f"text_encoder ({path.name}): not the umT5 encoder of this model: {problem}")
    return _assign(model, state_dict).eval()


def load_vae(sources: Sources) -> AutoencoderKLWan:
    """The Wan 2.1 VAE in float32 (decoding in bf16 bands the colours)."""
    if sources.vae is None:
        assert sources.diffusers is not None
        try:
            vae: AutoencoderKLWan = AutoencoderKLWan.from_pretrained(
                sources.diffusers, subfolder="vae", torch_dtype=torch.float32
            )
        except Exception as exc:
            raise ModelLoadError(f"vae: failed to load vae/: {exc}") from exc
        return vae
    path = sources.vae
    state_dict, _ = read_tensors(path)
    if is_fp8_scaled(state_dict):
        state_dict = dequantize_fp8_scaled(state_dict, torch.float32)
    if "decoder.middle.0.residual.0.gamma" in state_dict:  # Wan's names: diffusers' converter
        state_dict = dict(convert_wan_vae_to_diffusers(state_dict))
    if sources.diffusers is not None:
        config = _read_json(sources.diffusers / "vae" / "config.json")
    else:  # the Wan 2.1 VAE's structure (diffusers' converter assumes it) at the file's width
        conv_in = state_dict.get("encoder.conv_in.weight")
        config = {**A14B_VAE, "base_dim": conv_in.shape[0] if conv_in is not None else A14B_VAE["base_dim"]}
    with init_empty_weights():
        model = AutoencoderKLWan.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    problem = _shape_problems(state_dict, model)
    if problem:
        raise ModelLoadError(f"vae ({path.name}): not the Wan 2.1 VAE of this model: {problem}")
    return _assign(model.float(), state_dict).eval()


def _load_tokenizer(sources: Sources) -> Any:
    directory = sources.tokenizer or (sources.diffusers / "tokenizer" if sources.diffusers else None)
    if directory is None:
        raise ModelLoadError(
            "no tokenizer: name a tokenizer directory (google/umt5-xxl) or a diffusers directory"
        )
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"tokenizer: failed to load {directory}: {exc}") from exc
