"""Exported LoRA files: Wan key names, metadata, and a lossless round trip through diffusers."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from PIL import Image
from safetensors import safe_open

import wanforge
from tests.training.synthetic import Clip
from wanforge.engine.demo import build_demo_components, transformer_config
from wanforge.training.export import LoraInfo, export_lora, to_wan_state_dict, wan_module_name
from wanforge.training.latents import build_cache
from wanforge.training.lora import ADAPTER_NAME, add_lora, lora_modules, lora_state_dict
from wanforge.training.run import TrainParams, as_pipeline, train_lora
from wanforge.training.timesteps import EXPERTS, Expert
from wanforge.training.trainer import ExpertTrainer, train_sequentially


def clips(n: int) -> list[Clip]:
    out = []
    for i in range(n):
        video = np.zeros((9, 32, 48, 3), np.uint8)
        for f in range(9):
            video[f, 4 + 2 * i : 20 + 2 * i, 2 + 3 * f : 18 + 3 * f] = (220, 180 - 40 * i, 60)
        out.append(Clip(video, f"p3r5on, a square moves to the right {i}"))
    return out


@contextmanager
def lora_load_complaints() -> Iterator[list[str]]:
    """Everything diffusers or peft log at WARNING or above, or warn, while loading."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.name}: {record.getMessage()}")

    handler = Collect(level=logging.WARNING)
    loggers = [logging.getLogger(name) for name in ("diffusers", "peft")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        messages.extend(str(w.message) for w in caught if "key" in str(w.message).lower())
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def generate(pipe: WanImageToVideoPipeline, image: Image.Image) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        image=image,
        prompt="p3r5on, a square moves to the right",
        height=32,
        width=48,
        num_frames=9,
        num_inference_steps=4,  # timesteps 999, 937 (high-noise expert), 833, 625 (low-noise)
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return np.asarray(out.frames)


def info(expert: Expert, rank: int = 8, alpha: float = 4.0) -> LoraInfo:
    return LoraInfo(expert, "p3r5on", rank, alpha, 5, 5e-2, (0.0, 1.0), "wanforge-demo", {"clips": 2})


def test_every_target_maps_to_its_wan_name_and_back_through_diffusers() -> None:
    # a Wan 2.1 I2V-style expert also has the image key/value projections (k_img, v_img)
    config = {**transformer_config(), "image_dim": 8, "added_kv_proj_dim": 24}
    model = WanTransformer3DModel(**config)
    add_lora(model, rank=4, alpha=2.0, generator=torch.Generator().manual_seed(0))
    lora = {k: torch.randn(v.shape) for k, v in lora_state_dict(model).items()}
    wan = to_wan_state_dict(lora, alpha=2.0, dtype=torch.float32)
    block0 = {
        k.removeprefix("diffusion_model.blocks.0.") for k in wan if k.startswith("diffusion_model.blocks.0.")
    }
    modules = [
        "self_attn.q",
        "self_attn.k",
        "self_attn.v",
        "self_attn.o",
        "cross_attn.q",
        "cross_attn.k",
        "cross_attn.v",
        "cross_attn.o",
        "cross_attn.k_img",
        "cross_attn.v_img",
        "ffn.0",
        "ffn.2",
    ]
    assert block0 == {f"{m}.{p}" for m in modules for p in ("lora_A.weight", "lora_B.weight", "alpha")}
    assert len(wan) == 2 * 3 * len(modules)
    assert wan["diffusion_model.blocks.1.ffn.0.alpha"].item() == 2.0

    back = _convert_non_diffusers_wan_lora_to_diffusers(dict(wan))
    assert set(back) == {f"transformer.{k}" for k in lora}
    for key, value in lora.items():  # diffusers folds alpha / rank = 0.5 into A
        expected = value * 0.5 if ".lora_A." in key else value
        torch.testing.assert_close(back[f"transformer.{key}"], expected)


def test_module_names_outside_the_mapping_are_refused() -> None:
    assert wan_module_name("blocks.12.attn2.to_out.0") == "blocks.12.cross_attn.o"
    with pytest.raises(ValueError):
        wan_module_name("proj_out")


def test_exported_files_load_into_diffusers_and_reproduce_the_trained_model(tmp_path: Path) -> None:
    data = clips(2)
    trained = as_pipeline(build_demo_components())
    cache = build_cache(trained, data, torch.device("cpu"))
    experts = {"high_noise": trained.transformer, "low_noise": trained.transformer_2}
    trainers = [
        ExpertTrainer(
            TrainParams(
                steps=5, learning_rate=5e-2, lora_rank=8, lora_alpha=4.0, eval_samples=0
            ).expert_config(e),
            experts[e],
            cache,
            torch.device("cpu"),
        )
        for e in EXPERTS
    ]
    train_sequentially(trainers)  # the adapters stay in `trained`, active
    paths = {e: tmp_path / f"t_{e}.safetensors" for e in EXPERTS}
    for e in EXPERTS:
        export_lora(lora_state_dict(experts[e]), paths[e], info(e), dtype=torch.float32)

    loaded = WanImageToVideoPipeline(**build_demo_components().as_kwargs())
    with lora_load_complaints() as complaints:
        loaded.load_lora_weights(str(paths["high_noise"]), adapter_name="high")
        loaded.load_lora_weights(str(paths["low_noise"]), adapter_name="low", load_into_transformer_2=True)
    assert complaints == []
    assert lora_modules(loaded.transformer) == lora_modules(trained.transformer)
    assert lora_modules(loaded.transformer_2) == lora_modules(trained.transformer_2)
    assert len(lora_modules(loaded.transformer)) == 20  # 2 blocks x (8 attention + 2 FFN)
    assert (
        loaded.transformer.peft_config["high"].target_modules
        == trained.transformer.peft_config[ADAPTER_NAME].target_modules
    )

    image = Image.fromarray(data[0].frames[0])
    with torch.no_grad():
        ours, theirs = generate(trained, image), generate(loaded, image)
        base = generate(as_pipeline(build_demo_components()), image)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(theirs - base).max() > 1e-2

    # each file matters: the low-noise LoRA alone gives other frames than both together
    low_only = as_pipeline(build_demo_components())
    low_only.load_lora_weights(str(paths["low_noise"]), adapter_name="low", load_into_transformer_2=True)
    with torch.no_grad():
        partial = generate(low_only, image)
    assert np.abs(partial - base).max() > 1e-3 and np.abs(partial - theirs).max() > 1e-3


def test_train_lora_writes_both_files_with_wan_keys_and_metadata(tmp_path: Path) -> None:
    params = TrainParams(steps=2, eval_samples=0)  # the defaults: p3r5on, 2e-4, rank 32
    result = train_lora(build_demo_components(), clips(2), params, tmp_path, "job7", device="cpu")
    assert result.high_noise_path == tmp_path / "job7_high_noise.safetensors"
    assert result.low_noise_path == tmp_path / "job7_low_noise.safetensors"
    ranges = {"high_noise": [900.0, 1000.0], "low_noise": [0.0, 900.0]}
    for expert, path in (("high_noise", result.high_noise_path), ("low_noise", result.low_noise_path)):
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
        assert meta["expert"] == expert
        assert meta["trigger_word"] == "p3r5on"
        assert (meta["lora_rank"], meta["lora_alpha"], meta["steps"]) == ("32", "32.0", "2")
        assert float(meta["learning_rate"]) == 2e-4
        assert json.loads(meta["timestep_range"]) == ranges[expert]
        assert meta["base_model"] == "wanforge-demo"
        assert meta["wanforge_version"] == wanforge.__version__
        dataset = json.loads(meta["dataset"])
        assert (dataset["clips"], dataset["frames"], dataset["sizes"]) == (2, [9], ["48x32"])
        assert all(k.startswith("diffusion_model.blocks.") for k in keys)
        assert len(keys) == 2 * 10 * 3
        assert "diffusion_model.blocks.1.self_attn.o.lora_B.weight" in keys
        assert tensors["diffusion_model.blocks.0.ffn.2.lora_A.weight"].shape == (32, 32)
        assert tensors["diffusion_model.blocks.0.ffn.2.lora_A.weight"].dtype == torch.bfloat16
        assert tensors["diffusion_model.blocks.0.cross_attn.q.alpha"].item() == 32.0

    pipe = as_pipeline(build_demo_components())
    with lora_load_complaints() as complaints:
        pipe.load_lora_weights(str(result.high_noise_path), adapter_name="h")
        pipe.load_lora_weights(str(result.low_noise_path), adapter_name="l", load_into_transformer_2=True)
    assert complaints == []
