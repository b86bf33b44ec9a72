from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
from PIL import Image

from wanforge.engine.demo import build_demo_components
from wanforge.engine.generate import Engine, GenerationRequest
from wanforge.engine.loading import (
    LoadedModel,
    ModelLoadError,
    load_pipeline,
    resolve_device,
)
from wanforge.engine.plan import Card, ModelSizes, plan_generation
from wanforge.engine.plan import Options as PlanOptions
from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B

GiB = 1024**3


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model written in diffusers format, as a real checkpoint directory would be."""
    path = tmp_path_factory.mktemp("ckpt") / "Wan2.2-I2V-A14B-Diffusers"
    WanImageToVideoPipeline(**build_demo_components().as_kwargs()).save_pretrained(path)
    return path


@pytest.fixture
def broken_copy(saved_checkpoint: Path, tmp_path: Path) -> Path:
    path = tmp_path / "copy"
    shutil.copytree(saved_checkpoint, path)
    return path


def edit_index(path: Path, **changes: object) -> None:
    index_path = path / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update(changes)
    index_path.write_text(json.dumps(index))


def test_demo_loads_in_float32_on_the_cpu(demo_loaded: LoadedModel) -> None:
    assert demo_loaded.name == "demo"
    assert demo_loaded.profile is DEMO
    assert demo_loaded.device == torch.device("cpu")
    assert demo_loaded.dtype == torch.float32
    assert demo_loaded.memory_mode == "gpu"
    assert demo_loaded.pipe.transformer.dtype == torch.float32
    assert demo_loaded.pipe.config["boundary_ratio"] == 0.9


def test_checkpoint_directory_loads_through_the_real_path(saved_checkpoint: Path) -> None:
    loaded = load_pipeline(str(saved_checkpoint))
    assert loaded.name == "Wan2.2-I2V-A14B-Diffusers"
    assert loaded.profile is WAN22_I2V_A14B
    assert (loaded.device, loaded.dtype, loaded.memory_mode) == (torch.device("cpu"), torch.float32, "gpu")
    assert loaded.pipe.transformer_2 is not None
    assert loaded.pipe.vae.dtype == torch.float32


def test_checkpoint_generates_the_same_frames_as_the_demo(
    saved_checkpoint: Path, demo_loaded: LoadedModel, make_image: Callable[..., Image.Image]
) -> None:
    profile = replace(DEMO, steps=3)
    from_disk = load_pipeline(str(saved_checkpoint), profile=profile)
    req = GenerationRequest(make_image(112, 64), "a cat walks", "", "480p", seed=11, duration_s=1)
    a, _ = Engine(from_disk).render(req)
    b, _ = Engine(replace(demo_loaded, profile=profile)).render(req)
    assert np.abs(a - b).max() <= 1e-6


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pipeline(str(tmp_path / "nope"))


def test_a_file_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_pipeline(str(tmp_path / "model.safetensors"))


def test_missing_model_index(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="has no model_index"):
        load_pipeline(str(tmp_path))


def test_invalid_model_index(broken_copy: Path) -> None:
    (broken_copy / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_pipeline(str(broken_copy))


def test_missing_second_expert_is_named(broken_copy: Path) -> None:
    edit_index(broken_copy, transformer_2=[None, None])
    with pytest.raises(ModelLoadError, match="no 'transformer_2' component"):
        load_pipeline(str(broken_copy))


def test_missing_component_folder_is_named(broken_copy: Path) -> None:
    shutil.rmtree(broken_copy / "transformer")
    with pytest.raises(ModelLoadError, match="transformer/ is missing"):
        load_pipeline(str(broken_copy))


def test_every_problem_is_reported_at_once(broken_copy: Path) -> None:
    edit_index(broken_copy, boundary_ratio=None, _class_name="WanPipeline")
    (broken_copy / "vae" / "config.json").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_pipeline(str(broken_copy))
    message = str(info.value)
    assert "boundary_ratio is missing" in message
    assert "'WanPipeline'" in message
    assert "vae/config.json is missing" in message


def test_corrupt_weights(broken_copy: Path) -> None:
    (broken_copy / "transformer_2" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage" * 8)
    with pytest.raises(ModelLoadError, match="failed to load"):
        load_pipeline(str(broken_copy))


def test_memory_mode_validation(saved_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="unknown memory_mode"):
        load_pipeline("demo", memory_mode="disk")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_pipeline(str(saved_checkpoint), device="cpu", memory_mode="model_offload")
    assert load_pipeline("demo", device="cpu", memory_mode="gpu").memory_mode == "gpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_pipeline(str(tmp_path / "never-read"), device="cuda")


def test_memory_mode_is_chosen_from_free_memory() -> None:
    """The plan's choice for A14B in bf16 (two 26.7 GiB experts, a 10.6 GiB umT5, the fp32 VAE) at
    720p, 81 frames, by free memory. 79 GiB (an 80 GB card) was model_offload with the flat 16 GiB
    reserve; it now keeps both experts and the VAE resident and streams the text encoder."""

    def mode(free_gib: float) -> str:
        card = Card("card", int(free_gib * GiB), int(free_gib * GiB), (8, 0))
        return plan_generation(card, ModelSizes.A14B, PlanOptions(), "720p").memory_mode

    assert mode(139) == "gpu"
    assert mode(79) == "text_encoder_offload"
    assert mode(44) == "model_offload"
    assert mode(23) == "group_offload"


def test_the_demo_load_carries_its_plan(demo_loaded: LoadedModel) -> None:
    plan = demo_loaded.plan
    assert plan is not None
    assert (plan.memory_mode, plan.fp8, plan.attention) == ("gpu", "off", "native")
    assert plan.resident == ("transformer", "transformer_2", "text_encoder", "vae")
    assert plan.frames == 129  # the longest served job


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_native_1080p_is_a_setting(saved_checkpoint: Path) -> None:
    """WANFORGE_STRATEGY_1080P reaches the profile: the 1080p tier denoises at 1080p itself."""
    from wanforge.config import Settings
    from wanforge.worker.tasks import load_model

    native = load_model(Settings(model=str(saved_checkpoint), strategy_1080p="native"))
    assert native.profile == replace(WAN22_I2V_A14B, strategy_1080p="native")
    assert native.profile.generation_resolution("1080p") == "1080p"
    default = load_model(Settings(model=str(saved_checkpoint)))
    assert default.profile is WAN22_I2V_A14B and default.profile.generation_resolution("1080p") == "720p"
    with pytest.raises(ValueError, match="strategy_1080p"):
        Settings(strategy_1080p="sideways")  # type: ignore[arg-type]
