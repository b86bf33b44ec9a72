"""`--model random:<size>`: the real classes at a named size with random weights made in place.

Full size is checked on the meta device (shapes, parameter counts, dtypes, one 480p expert
forward: no memory, about 2 s); a real end-to-end run goes through the engine at the demo's size.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

from wanforge.engine.generate import Engine, GenerationRequest
from wanforge.engine.loading import ModelLoadError, load_pipeline
from wanforge.engine.profiles import DEMO, WAN22_I2V_A14B
from wanforge.engine.random_model import (
    A14B_EXPERT,
    RandomSpec,
    build_expert,
    build_meta_components,
    homes,
    materialize,
    parse_random_model,
)
from wanforge.training.profiles import training_profile

from .conftest import smooth_image

# the figure, from the real class at full size: 14.29 B parameters per A14B expert
A14B_EXPERT_PARAMETERS = 14_288_901_184
UMT5_XXL_ENCODER_PARAMETERS = 5_680_910_336


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("model", "spec"),
    [
        ("random:a14b", RandomSpec("a14b")),
        ("random:tiny", RandomSpec("tiny")),
        ("random:a14b?layers=2", RandomSpec("a14b", layers=2)),
        ("random:a14b?layers=1&text_layers=3", RandomSpec("a14b", layers=1, text_layers=3)),
    ],
)
def test_the_model_string_names_a_size_and_optional_depths(model: str, spec: RandomSpec) -> None:
    assert parse_random_model(model) == spec


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("random:a14", "unknown random model size 'a14'"),
        ("random:", "unknown random model size ''"),
        ("random:a14b?layers=0", "layers must be a whole number >= 1, got '0'"),
        ("random:a14b?layers=two", "layers must be a whole number >= 1, got 'two'"),
        ("random:a14b?depth=2", "unknown or repeated option 'depth'"),
        ("random:a14b?layers=1&layers=2", "unknown or repeated option 'layers'"),
        ("random:a14b?layers", "layers must be a whole number >= 1, got ''"),
    ],
)
def test_a_bad_model_string_is_refused_at_load_with_its_reason(model: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message.replace("?", r"\?")):
        load_pipeline(model)


def test_a14b_is_the_real_model_at_full_size_on_the_meta_device() -> None:
    parts = build_meta_components(parse_random_model("random:a14b"), torch.bfloat16)
    assert parts.spec.profile is WAN22_I2V_A14B and parts.boundary_ratio == 0.9
    for expert in (parts.transformer, parts.transformer_2):
        assert count(expert) == A14B_EXPERT_PARAMETERS
        assert {k: expert.config[k] for k in A14B_EXPERT} == A14B_EXPERT
        dtypes = {name: p.dtype for name, p in expert.named_parameters()}
        # as `from_pretrained(torch_dtype=bfloat16)` loads it: diffusers' keep-in-fp32 modules stay fp32
        assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16
        assert dtypes["blocks.0.ffn.net.0.proj.weight"] == torch.bfloat16
        assert dtypes["scale_shift_table"] == dtypes["blocks.0.norm2.weight"] == torch.float32
        assert dtypes["condition_embedder.time_embedder.linear_1.weight"] == torch.float32
        assert all(p.is_meta for p in expert.parameters())
    assert parts.transformer is not parts.transformer_2
    text = parts.text_encoder
    assert text.config.d_model == A14B_EXPERT["text_dim"] == 4096
    assert (text.config.num_layers, text.config.num_heads, text.config.d_ff) == (24, 64, 10240)
    assert count(text) == UMT5_XXL_ENCODER_PARAMETERS
    assert {p.dtype for p in text.parameters()} == {torch.bfloat16}

    def public(config: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(parts.vae.config) == public(AutoencoderKLWan().config)  # the Wan 2.1 VAE
    assert {p.dtype for p in parts.vae.parameters()} == {torch.float32}
    scheduler = parts.scheduler.config
    assert (scheduler.prediction_type, scheduler.use_flow_sigmas, scheduler.num_train_timesteps) == (
        "flow_prediction",
        True,
        1000,
    )

    # one 480p expert forward at full size, on meta tensors: the shapes line up end to end
    with torch.no_grad():
        out = parts.transformer(
            hidden_states=torch.empty(1, 36, 21, 60, 104, device="meta", dtype=torch.bfloat16),
            encoder_hidden_states=torch.empty(1, 512, 4096, device="meta", dtype=torch.bfloat16),
            timestep=torch.empty(1, device="meta"),
            return_dict=False,
        )[0]
    assert (tuple(out.shape), out.dtype) == ((1, 16, 21, 60, 104), torch.bfloat16)


def test_reduced_depth_keeps_every_full_size_tensor_shape() -> None:
    full = build_meta_components(parse_random_model("random:a14b"), torch.bfloat16)
    shallow = build_meta_components(parse_random_model("random:a14b?layers=1&text_layers=1"), torch.bfloat16)
    for name in ("transformer", "text_encoder"):
        deep = {k: tuple(p.shape) for k, p in getattr(full, name).named_parameters()}
        shapes = {k: tuple(p.shape) for k, p in getattr(shallow, name).named_parameters()}
        assert shapes.items() <= deep.items()
    assert shallow.transformer.config["num_layers"] == 1 and shallow.text_encoder.config.num_layers == 1
    assert count(shallow.vae) == count(full.vae)


def test_materialize_fills_in_place_reties_weights_and_rebuilds_the_rotary_tables() -> None:
    a = build_meta_components(parse_random_model("random:tiny"), torch.float32)
    text = materialize(a.text_encoder, torch.device("cpu"), None, seed=3)
    assert text.shared.weight is text.encoder.embed_tokens.weight  # to_empty had untied them
    assert all(torch.isfinite(p).all() for p in text.parameters())

    expert = build_expert(a.transformer.config, torch.device("cpu"), torch.bfloat16, seed=5)
    again = build_expert(a.transformer.config, torch.device("cpu"), torch.bfloat16, seed=5)
    other = build_expert(a.transformer.config, torch.device("cpu"), torch.bfloat16, seed=6)
    weight = "blocks.0.attn1.to_q.weight"
    assert torch.equal(expert.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(expert.state_dict()[weight], other.state_dict()[weight])
    assert expert.state_dict()[weight].dtype == torch.bfloat16
    assert expert.scale_shift_table.dtype == torch.float32
    assert torch.equal(expert.state_dict()["blocks.0.attn1.to_q.bias"], torch.zeros(24, dtype=torch.bfloat16))
    # the rotary tables are computed in __init__: rebuilt, they equal a normally built model's
    reference = type(expert)(**a.transformer.config)
    for name, buffer in reference.rope.named_buffers():
        assert torch.equal(dict(expert.rope.named_buffers())[name], buffer)


def test_random_tiny_runs_end_to_end_through_the_engine() -> None:
    loaded = load_pipeline("random:tiny?layers=1")
    assert (loaded.name, loaded.profile, loaded.dtype, loaded.memory_mode) == (
        "random:tiny?layers=1",
        DEMO,
        torch.float32,
        "gpu",
    )
    pipe = loaded.pipe
    assert pipe.transformer.config["num_layers"] == pipe.transformer_2.config["num_layers"] == 1
    assert pipe.config["boundary_ratio"] == 0.9
    assert not any(p.is_meta for m in (pipe.transformer, pipe.text_encoder, pipe.vae) for p in m.parameters())
    engine = Engine(replace(loaded, profile=replace(loaded.profile, steps=2, fps=8)))  # the fast test profile
    result = engine.generate(
        GenerationRequest(smooth_image(128, 72), "a cat", "", "480p", seed=7, duration_s=1)
    )
    assert result.frames.shape == (9, 480, 832, 3) and result.frames.dtype.name == "uint8"
    assert result.steps == 2 and 0 < result.frames.mean() < 255


def test_random_a14b_takes_the_a14b_profiles() -> None:
    spec = parse_random_model("random:a14b?layers=1")
    assert spec.profile is WAN22_I2V_A14B
    assert training_profile(spec.profile.name).frames == 33


def test_each_module_is_made_where_the_memory_mode_and_fp8_keep_it() -> None:
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    every = ("text_encoder", "vae", "transformer", "transformer_2")
    assert homes(gpu, "gpu") == dict.fromkeys(every, gpu)
    assert homes(gpu, "model_offload") == dict.fromkeys(every, cpu)
    assert homes(gpu, "text_encoder_offload") == {
        "text_encoder": cpu,
        "vae": gpu,
        "transformer": gpu,
        "transformer_2": gpu,
    }
    assert homes(gpu, "group_offload", "storage") == dict.fromkeys(every, cpu)
    # FP8: the experts start on the CPU, as a checkpoint's, and the engine converts them from there
    for fp8 in ("storage", "compute"):
        assert homes(gpu, "gpu", fp8) == {
            "text_encoder": gpu,
            "vae": gpu,
            "transformer": cpu,
            "transformer_2": cpu,
        }


def test_random_tiny_loads_with_fp8_storage_as_a_checkpoint_does() -> None:
    loaded = load_pipeline("random:tiny?layers=1", fp8="storage")
    weight = loaded.pipe.transformer.blocks[0].attn1.to_q.weight
    assert (loaded.fp8, weight.dtype, weight.is_meta) == ("storage", torch.float8_e4m3fn, False)
