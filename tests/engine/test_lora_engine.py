"""LoRAs through the engine: parity with diffusers' own loading, every format, hot-swap, per-expert
semantics, scales, full deltas, the adapter cache and the errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from PIL import Image

from tests.engine.conftest import FAST_TEST_PROFILE, smooth_image
from tests.engine.lora_files import (
    high,
    low,
    random_lora,
    request,
    write_comfy_ab,
    write_comfy_down_up,
    write_diffusers,
    write_musubi,
    write_tensors,
    write_wanforge,
)
from wanforge.engine.adapters import AdapterCache, adapter_name_for
from wanforge.engine.demo import transformer_config
from wanforge.engine.generate import Engine, GenerationRequest, plan_generation, run_pipeline
from wanforge.engine.loading import LoadedModel, load_pipeline
from wanforge.engine.loras import LoraError, LoraRequest
from wanforge.engine.sizing import fit_image
from wanforge.media.images import normalize_image
from wanforge.training.export import to_wan_state_dict
from wanforge.training.lora import add_lora, lora_state_dict

Render = Callable[..., np.ndarray]


def fast(loaded: LoadedModel) -> LoadedModel:
    """The fast test profile at a tiny generation size (48x32, 9 frames, 2 steps)."""
    return replace(loaded, profile=replace(loaded.profile, **FAST_TEST_PROFILE, generation_area=48 * 32))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    """A demo pipeline of this module's own: its adapters never reach other tests' pipelines."""
    return fast(load_pipeline("demo"))


@pytest.fixture(scope="module")
def engine(loaded: LoadedModel) -> Engine:
    return Engine(loaded, lora_cache_size=4)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return smooth_image(48, 32, seed=5)


def request_for(image: Image.Image, *loras: LoraRequest) -> GenerationRequest:
    return GenerationRequest(image, "a cat walks", "", "480p", seed=11, duration_s=1, loras=tuple(loras))


@pytest.fixture(scope="module")
def render(engine: Engine, image: Image.Image) -> Render:
    def run(*loras: LoraRequest) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            frames, _plan = engine.render(request_for(image, *loras))
        return frames

    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three LoRAs in wanforge's own format: A and B on both experts, C a second high-noise file."""
    root = tmp_path_factory.mktemp("loras")
    return {
        "a": write_wanforge(random_lora(1), root / "a.safetensors"),
        "b": write_wanforge(random_lora(2), root / "b.safetensors"),
        "c": write_wanforge(random_lora(3), root / "c.safetensors", "low_noise"),
    }


@pytest.fixture(scope="module")
def base(render: Render) -> np.ndarray:
    return render()


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's parameters by their plain names (LoRA wrappers' `base_layer.` dropped)."""
    return {
        name.replace(".base_layer.", "."): p.detach().clone()
        for name, p in model.named_parameters()
        if "lora_" not in name
    }


def plain_diffusers_call(loaded: LoadedModel, req: GenerationRequest) -> np.ndarray:
    """The pipeline call the engine makes, without the engine (whose adapter switch would turn
    adapters loaded behind its back off)."""
    plan = plan_generation(loaded.profile, req)
    fitted = fit_image(normalize_image(req.image), plan.gen_width, plan.gen_height)
    generator = torch.Generator().manual_seed(req.seed)
    with torch.random.fork_rng(devices=[]):
        return run_pipeline(loaded.pipe, fitted, req.prompt, plan, generator)


def test_two_files_equal_diffusers_own_load_lora_weights(
    render: Render, base: np.ndarray, files: dict[str, Path], image: Image.Image
) -> None:
    ours = render(high(files["a"]), low(files["c"]))

    reference = fast(load_pipeline("demo"))
    reference.pipe.load_lora_weights(str(files["a"]))
    reference.pipe.load_lora_weights(str(files["c"]), load_into_transformer_2=True)
    theirs = plain_diffusers_call(reference, request_for(image))

    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(ours - base).max() > 1e-2


@pytest.mark.parametrize(
    "writer", [write_diffusers, write_comfy_ab, write_comfy_down_up, write_musubi], ids=lambda w: w.__name__
)
def test_the_same_weights_in_every_format_give_the_same_frames(
    render: Render, files: dict[str, Path], tmp_path: Path, writer: Callable[..., Path]
) -> None:
    reference = render(request(files["b"]))
    converted = writer(random_lora(2), tmp_path / "b.safetensors")
    assert np.abs(render(request(converted)) - reference).max() <= 1e-6


def test_hot_swap_each_output_equals_its_single_job_reference(
    loaded: LoadedModel, files: dict[str, Path], image: Image.Image, base: np.ndarray
) -> None:
    def fresh_render(*loras: LoraRequest) -> np.ndarray:
        """A single job on a pipeline that never saw another LoRA."""
        engine = Engine(fast(load_pipeline("demo")))
        with torch.random.fork_rng(devices=[]):
            return engine.render(request_for(image, *loras))[0]

    singles = {"a": fresh_render(request(files["a"])), "b": fresh_render(request(files["b"]))}
    engine = Engine(loaded, lora_cache_size=1)  # small: B evicts A, A is loaded again
    sequence = [None, "a", None, "b", "a"]
    outputs = []
    for name in sequence:
        loras = () if name is None else (request(files[name]),)
        with torch.random.fork_rng(devices=[]):
            outputs.append(engine.render(request_for(image, *loras))[0])
    for name, out in zip(sequence, outputs, strict=True):
        expected = base if name is None else singles[name]
        assert np.array_equal(out, expected), name
    assert not np.array_equal(singles["a"], singles["b"])


def test_a_high_noise_lora_leaves_transformer_2_untouched_and_vice_versa(
    engine: Engine, loaded: LoadedModel, files: dict[str, Path], render: Render, base: np.ndarray
) -> None:
    pipe = loaded.pipe
    before = params(pipe.transformer_2)
    name = adapter_name_for(request(files["a"]).sha256)
    with engine.adapters.applied([high(files["a"])]) as applied:
        assert [a["expert"] for a in applied.adapters] == ["high_noise"]
        assert name in pipe.transformer.peft_config
        assert pipe.transformer.active_adapters() == [name]
        if getattr(pipe.transformer_2, "peft_config", None):
            assert pipe.transformer_2.active_adapters() == []
        inside = params(pipe.transformer_2)
        assert inside.keys() == before.keys()
        assert all(torch.equal(inside[k], v) for k, v in before.items())

    name_c = adapter_name_for(request(files["c"]).sha256)
    with engine.adapters.applied([low(files["c"])]):
        assert name_c in pipe.transformer_2.peft_config
        assert name_c not in pipe.transformer.peft_config
        assert pipe.transformer.active_adapters() == []
        assert pipe.transformer_2.active_adapters() == [name_c]

    high_only, low_only, both = render(high(files["a"])), render(low(files["a"])), render(request(files["a"]))
    for one, other in [(high_only, base), (low_only, base), (high_only, both), (low_only, both)]:
        assert np.abs(one - other).max() > 1e-3


def test_scale_zero_equals_base_and_scale_two_differs_from_one(
    render: Render, base: np.ndarray, files: dict[str, Path]
) -> None:
    assert np.array_equal(render(request(files["a"], scale=0.0)), base)
    one, two = render(request(files["a"], scale=1.0)), render(request(files["a"], scale=2.0))
    assert np.abs(two - one).max() > 1e-3


def test_the_same_file_twice_adds_its_scales(render: Render, files: dict[str, Path]) -> None:
    twice = render(request(files["a"], scale=0.5), request(files["a"], scale=1.5))
    assert np.abs(twice - render(request(files["a"], scale=2.0))).max() <= 1e-6


def lightx2v_file(path: Path, with_lora: bool) -> Path:
    tensors: dict[str, torch.Tensor] = {
        "diffusion_model.blocks.0.self_attn.q.diff_b": torch.full((24,), 0.25),
        "diffusion_model.blocks.0.norm3.diff": torch.full((24,), 0.5),
        "diffusion_model.blocks.1.diff_m": torch.full((1, 6, 24), 0.125),
        "diffusion_model.blocks.1.ffn.2.diff": torch.full((24, 32), 0.0625),
    }
    if with_lora:
        wan = to_wan_state_dict(random_lora(4), 2.0, dtype=torch.float32)
        tensors.update({k: v for k, v in wan.items() if ".blocks.0.self_attn." in k})
    return write_tensors(tensors, path)


def test_lightx2v_deltas_change_exactly_the_named_tensors_and_restore_exactly(
    engine: Engine, loaded: LoadedModel, tmp_path: Path, render: Render, base: np.ndarray
) -> None:
    pipe = loaded.pipe
    path = lightx2v_file(tmp_path / "lightning.safetensors", with_lora=False)
    before = {"transformer": params(pipe.transformer), "transformer_2": params(pipe.transformer_2)}
    with engine.adapters.applied([high(path, scale=2.0)]) as applied:
        assert applied.adapters[0]["format"] == "lightx2v"
        inside = params(pipe.transformer)
        changed = {k for k, v in before["transformer"].items() if not torch.equal(inside[k], v)}
        assert changed == {
            "blocks.0.attn1.to_q.bias",
            "blocks.0.norm2.weight",
            "blocks.1.scale_shift_table",
            "blocks.1.ffn.net.2.weight",
        }
        old, new = before["transformer"]["blocks.0.norm2.weight"], inside["blocks.0.norm2.weight"]
        assert torch.equal(new, old + 2.0 * 0.5)
        assert all(torch.equal(params(pipe.transformer_2)[k], v) for k, v in before["transformer_2"].items())
    after = params(pipe.transformer)
    assert all(torch.equal(after[k], v) for k, v in before["transformer"].items())

    assert np.abs(render(high(path)) - base).max() > 1e-3
    mixed = lightx2v_file(tmp_path / "mixed.safetensors", with_lora=True)  # deltas + a peft part
    assert np.abs(render(request(mixed)) - render(high(path), low(path))).max() > 1e-3
    assert np.array_equal(render(), base)


def test_deltas_are_refused_where_the_weights_cannot_be_patched(loaded: LoadedModel, tmp_path: Path) -> None:
    cache = AdapterCache(loaded.pipe, allow_deltas=False)
    with pytest.raises(LoraError, match=r"lightning\.safetensors carries full weight deltas"):
        cache.load([high(lightx2v_file(tmp_path / "lightning.safetensors", with_lora=False))])


def test_the_cache_keeps_the_most_recent_and_deletes_evicted_adapters(
    loaded: LoadedModel, files: dict[str, Path]
) -> None:
    ticks = iter([10.0, 10.5, 10.75])
    cache = AdapterCache(loaded.pipe, capacity=2, clock=lambda: next(ticks))
    a, b = request(files["a"]), request(files["b"])
    name_a, name_b = adapter_name_for(a.sha256), adapter_name_for(b.sha256)
    with cache.applied([a]) as applied:
        assert (applied.load_s, applied.activate_s) == (0.5, 0.25)
    assert cache.keys() == [(a.sha256, "high_noise"), (a.sha256, "low_noise")]
    cache.load([b])
    assert cache.keys() == [(b.sha256, "high_noise"), (b.sha256, "low_noise")]
    for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        assert name_a not in transformer.peft_config and name_b in transformer.peft_config
    cache.load([a, b])  # one request may hold more than the capacity while it runs
    assert len(cache) == 4
    cache.clear()
    assert len(cache) == 0
    for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        assert name_a not in getattr(transformer, "peft_config", {})
        assert name_b not in getattr(transformer, "peft_config", {})


def test_generate_reports_adapters_notes_and_timings(
    engine: Engine, image: Image.Image, files: dict[str, Path]
) -> None:
    a, c = request(files["a"], scale=0.75, name="style"), low(files["c"])
    result = engine.generate(request_for(image, a, c))
    assert result.adapters == [
        {"sha256": a.sha256, "name": "style", "scale": 0.75, "expert": "high_noise", "format": "wanforge"},
        {"sha256": a.sha256, "name": "style", "scale": 0.75, "expert": "low_noise", "format": "wanforge"},
        {
            "sha256": c.sha256,
            "name": "c.safetensors",
            "scale": 1.0,
            "expert": "low_noise",
            "format": "wanforge",
        },
    ]
    assert result.notes == []
    assert result.timings["lora_load_s"] > 0.0 and result.timings["lora_activate_s"] > 0.0
    plain = engine.generate(request_for(image))
    assert (plain.adapters, plain.notes) == ([], [])
    assert (plain.timings["lora_load_s"], plain.timings["lora_activate_s"]) == (0.0, 0.0)


def test_adapters_removed_behind_the_cache_are_loaded_again(
    engine: Engine, loaded: LoadedModel, files: dict[str, Path], render: Render
) -> None:
    first = render(request(files["a"]))
    for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        transformer.unload_lora()  # as any code outside the cache may do on a shared pipeline
    assert np.array_equal(render(request(files["a"])), first)


# ---- errors


def test_a_file_matching_no_layer_lists_at_most_ten_keys(engine: Engine, tmp_path: Path) -> None:
    tensors = {f"lora_unet_down_blocks_{i}_attn.lora_down.weight": torch.ones(2, 4) for i in range(12)}
    path = write_tensors(tensors, tmp_path / "sdxl.safetensors")
    with pytest.raises(LoraError) as caught:
        engine.adapters.load([request(path, name="sdxl-style.safetensors")])
    message = str(caught.value)
    assert message.startswith("sdxl-style.safetensors has no key that matches a layer of this model")
    assert message.count("lora_unet_down_blocks_") == 10
    assert message.endswith("(+2 more)")
    assert str(tmp_path) not in message


def test_a_lora_with_nan_or_inf_is_refused_and_absurd_values_are_noted(
    engine: Engine, image: Image.Image, tmp_path: Path
) -> None:
    """A diverged export "completed" with a black video; it is refused (1401 at the worker)."""
    lora = random_lora(4)
    first = sorted(k for k in lora if ".lora_B." in k)[0]
    for bad in (float("nan"), float("inf")):
        broken = {**lora, first: lora[first].clone().fill_(bad)}
        path = write_wanforge(broken, tmp_path / "diverged.safetensors")
        with pytest.raises(LoraError) as caught:
            engine.adapters.load([request(path, name="diverged.safetensors")])
        assert str(caught.value).startswith(
            "diverged.safetensors holds NaN or infinite values in 1 tensors ("
        )
    huge = {**lora, first: lora[first] * 1e6}
    path = write_wanforge(huge, tmp_path / "huge.safetensors")
    result = engine.generate(request_for(image, request(path, name="huge.safetensors")))
    assert any(n.startswith("huge.safetensors: values up to ") for n in result.notes)


def test_a_lora_for_a_wider_model_is_a_clear_shape_error(engine: Engine, tmp_path: Path) -> None:
    wider = WanTransformer3DModel(**{**transformer_config(), "attention_head_dim": 16})  # hidden 32, not 24
    add_lora(wider, rank=4, alpha=4.0, generator=torch.Generator().manual_seed(0))
    path = write_wanforge(lora_state_dict(wider), tmp_path / "wan21-t2v.safetensors")
    with pytest.raises(LoraError) as caught:
        engine.adapters.load([request(path)])
    message = str(caught.value)
    assert message.startswith("wan21-t2v.safetensors does not fit this model (a LoRA for another model?)")
    assert "blocks.0.attn1.to_k.lora_A.weight is 4x32, the layer needs 4x24" in message
    assert str(tmp_path) not in message
    assert adapter_name_for(request(path).sha256) not in getattr(
        engine.loaded.pipe.transformer, "peft_config", {}
    )


def test_a_partly_matching_file_applies_what_matches_and_notes_the_rest(
    engine: Engine, image: Image.Image, files: dict[str, Path], tmp_path: Path, render: Render
) -> None:
    wan = to_wan_state_dict(random_lora(2), 2.0, dtype=torch.float32)
    extra = {
        "diffusion_model.blocks.7.self_attn.q.lora_A.weight": torch.ones(4, 24),
        "diffusion_model.blocks.7.self_attn.q.lora_B.weight": torch.ones(24, 4),
        "diffusion_model.blocks.0.self_attn.q.dora_scale": torch.ones(1, 24),
    }
    path = write_tensors({**wan, **extra}, tmp_path / "partial.safetensors")
    result = engine.generate(request_for(image, request(path, name="partial")))
    assert result.notes == [
        "partial: skipped 3 tensors that match no layer of this model: "
        "diffusion_model.blocks.0.self_attn.q.dora_scale, "
        "blocks.7.attn1.to_q.lora_A.weight, blocks.7.attn1.to_q.lora_B.weight"
    ]
    assert np.abs(render(request(path)) - render(request(files["b"]))).max() <= 1e-6


@pytest.fixture(autouse=True)
def _no_adapter_left_active(loaded: LoadedModel) -> Iterator[None]:
    """After every test, no adapter is active and no base weight is patched."""
    yield
    for transformer in (loaded.pipe.transformer, loaded.pipe.transformer_2):
        if getattr(transformer, "peft_config", None):
            assert transformer.active_adapters() == []
