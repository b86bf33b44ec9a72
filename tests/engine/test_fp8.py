"""Which FP8 mode a machine runs, and which linear layers torchao's float8 compute converts.

torchao's float8 matmuls need CUDA sm89+, so on the CPU only the choice and the layer filter run;
the frames of ``compute`` are compared with the bf16 path by the GPU-only test at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from tests.engine.lora_files import high
from tests.engine.test_lora_engine import lightx2v_file
from wanforge.engine.demo import build_transformer, transformer_config
from wanforge.engine.fp8 import Fp8Platform, choose_fp8, fp8_linears, probe
from wanforge.engine.generate import Engine
from wanforge.engine.loading import load_pipeline
from wanforge.engine.loras import LoraError

CPU = Fp8Platform(cuda=False, torchao=True)
A100 = Fp8Platform(cuda=True, capability=(8, 0), torchao=True)
L40S = Fp8Platform(cuda=True, capability=(8, 9), torchao=True)
H100 = Fp8Platform(cuda=True, capability=(9, 0), torchao=True)
H100_NO_TORCHAO = Fp8Platform(cuda=True, capability=(9, 0), torchao=False)


@pytest.mark.parametrize(
    ("platform", "chosen"),
    [(CPU, "off"), (A100, "storage"), (H100_NO_TORCHAO, "storage"), (L40S, "compute"), (H100, "compute")],
)
def test_auto_picks_compute_where_it_runs_else_storage_on_cuda_else_off(
    platform: Fp8Platform, chosen: str
) -> None:
    assert choose_fp8("auto", platform) == chosen


@pytest.mark.parametrize("platform", [CPU, A100, H100])
@pytest.mark.parametrize("mode", ["off", "storage"])
def test_off_and_storage_run_anywhere(platform: Fp8Platform, mode: str) -> None:
    assert choose_fp8(mode, platform) == mode


@pytest.mark.parametrize(
    ("platform", "why"),
    [
        (CPU, "this worker runs on the CPU"),
        (A100, "this GPU is sm80"),
        (H100_NO_TORCHAO, "this GPU is sm90 and torchao is not installed"),
    ],
)
def test_compute_where_it_cannot_run_is_refused_naming_storage(platform: Fp8Platform, why: str) -> None:
    with pytest.raises(ValueError) as info:
        choose_fp8("compute", platform)
    assert str(info.value) == (
        "WANFORGE_FP8=compute needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell) "
        f"and torchao (pip install 'wanforge[fp8]'); {why}. Use WANFORGE_FP8=storage (fp8 weights, bf16 "
        "matmuls: memory only) or off"
    )
    assert choose_fp8("compute", H100) == "compute"


def test_auto_under_regional_compile_never_picks_storage() -> None:
    assert choose_fp8("auto", A100, compiled=True) == "off"
    assert choose_fp8("auto", H100, compiled=True) == "compute"


def test_the_worker_refuses_compute_at_start_on_this_cpu() -> None:
    assert probe(torch.device("cpu")) == CPU  # torchao is installed in the dev environment
    with pytest.raises(
        ValueError, match=r"^WANFORGE_FP8=compute needs a CUDA GPU .*this worker runs on the CPU"
    ):
        load_pipeline("demo", fp8="compute")
    assert load_pipeline("demo", fp8="auto").fp8 == "off"


def _tiny(**overrides: object) -> WanTransformer3DModel:
    return WanTransformer3DModel(**{**transformer_config(), **overrides})


BLOCK_LINEARS = [
    "attn1.to_q",
    "attn1.to_k",
    "attn1.to_v",
    "attn1.to_out.0",
    "attn2.to_q",
    "attn2.to_k",
    "attn2.to_v",
    "attn2.to_out.0",
    "ffn.net.0.proj",
    "ffn.net.2",
]


def test_compute_converts_the_blocks_linears_and_keeps_embedders_norms_and_head() -> None:
    # the demo's dims (24 = 2 heads x 12) are not multiples of 16: nothing would take a float8 matmul
    assert fp8_linears(build_transformer()) == []
    aligned = _tiny(attention_head_dim=16, ffn_dim=64)  # dim 32
    assert fp8_linears(aligned) == [f"blocks.{i}.{name}" for i in range(2) for name in BLOCK_LINEARS]
    linears = {n for n, m in aligned.named_modules() if isinstance(m, torch.nn.Linear)}
    # 16-aligned too, but outside the blocks: the embedders and the output head stay bf16
    assert linears - set(fp8_linears(aligned)) == {
        "condition_embedder.time_embedder.linear_1",
        "condition_embedder.time_embedder.linear_2",
        "condition_embedder.time_proj",
        "condition_embedder.text_embedder.linear_1",
        "condition_embedder.text_embedder.linear_2",
        "proj_out",
    }


def test_odd_shaped_linears_stay_bf16() -> None:
    odd_ffn = _tiny(attention_head_dim=16, ffn_dim=40)  # 40 is not a multiple of 16
    assert fp8_linears(odd_ffn) == [f"blocks.{i}.{name}" for i in range(2) for name in BLOCK_LINEARS[:8]]


@pytest.mark.skipif(
    not probe(torch.device("cuda" if torch.cuda.is_available() else "cpu")).compute_ok,
    reason="torchao float8 compute needs CUDA sm89+",
)
def test_compute_on_a_gpu_converts_the_filtered_linears_and_stays_close() -> None:  # pragma: no cover
    from wanforge.engine.fp8 import apply_fp8_compute

    torch.manual_seed(0)
    expert = _tiny(attention_head_dim=16, ffn_dim=64)
    torch.nn.Module.to(expert, device="cuda", dtype=torch.bfloat16)
    feed = {
        "hidden_states": torch.randn(1, 36, 3, 8, 8, device="cuda", dtype=torch.bfloat16),
        "timestep": torch.tensor([500], device="cuda"),
        "encoder_hidden_states": torch.randn(1, 8, 32, device="cuda", dtype=torch.bfloat16),
        "return_dict": False,
    }
    with torch.no_grad():
        reference = expert(**feed)[0].float()
        apply_fp8_compute([expert])
        out = expert(**feed)[0].float()
    assert "Float8" in type(expert.get_submodule("blocks.0.attn1.to_q").weight).__name__
    assert type(expert.proj_out.weight) is torch.nn.Parameter  # the head stays bf16
    # never run here (no sm89+ GPU in CI): a loose bound, to be replaced by the measured one
    assert float((out - reference).norm() / reference.norm()) < 0.1


def test_a_compute_worker_converts_each_expert_once_on_gpu_placement_and_refuses_deltas(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The load path of ``compute`` on the CPU, torchao's conversion replaced by a recorder."""
    from wanforge.engine import loading

    converted: list[list[torch.nn.Module]] = []
    monkeypatch.setattr("wanforge.engine.fp8.choose_fp8", lambda *_a, **_k: "compute")
    monkeypatch.setattr(loading, "apply_fp8_compute", converted.append)
    loaded = load_pipeline("demo", fp8="compute")
    assert (loaded.fp8, loaded.memory_mode) == ("compute", "gpu")
    assert converted == [[loaded.pipe.transformer], [loaded.pipe.transformer_2]]
    deltas = lightx2v_file(tmp_path / "lightning.safetensors", with_lora=False)
    with pytest.raises(LoraError) as info, Engine(loaded).adapters.applied([high(deltas)]):
        pass
    assert str(info.value) == (
        "lightning.safetensors carries full weight deltas (.diff), which this worker's float8 weights "
        "(WANFORGE_FP8=compute) cannot apply"
    )


def _int8_on_cpu() -> object:
    """A torchao config that quantizes on the CPU: a stand-in for float8 (which needs sm89+) that
    takes the same `quantize_` path, so peft meets a torchao weight as it would on the GPU."""
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig()


def test_compute_under_regional_compile_slots_first_then_quantizes_the_base_layers_only() -> None:
    """peft's torchao LoRA layer refuses the compile slot's LoRA bias, so the slot goes in before
    torchao; the filter then converts the wrapped base linears and never the slot's A/B."""
    from torchao.quantization import quantize_

    from wanforge.engine.compile import SLOT_ADAPTER, prepare_slots
    from wanforge.engine.fp8 import apply_fp8_compute, fp8_linear_filter

    late = _tiny(attention_head_dim=16, ffn_dim=64)
    torch.nn.Module.to(late, torch.bfloat16)
    quantize_(late, _int8_on_cpu(), filter_fn=fp8_linear_filter)  # the old order: torchao first
    with pytest.raises(ValueError, match="lora_bias"):
        prepare_slots([late], max_lora_rank=8, dtype=torch.bfloat16)

    expert = _tiny(attention_head_dim=16, ffn_dim=64)
    torch.nn.Module.to(expert, torch.bfloat16)
    prepare_slots([expert], max_lora_rank=8, dtype=torch.bfloat16)
    assert fp8_linears(expert) == [
        f"blocks.{i}.{name}.base_layer" for i in range(2) for name in BLOCK_LINEARS
    ]
    apply_fp8_compute([expert], config=_int8_on_cpu())
    to_q: Any = expert.get_submodule("blocks.0.attn1.to_q")
    assert "Int8" in type(to_q.base_layer.weight).__name__
    assert type(to_q.lora_A[SLOT_ADAPTER].weight) is torch.nn.Parameter  # the slot stays plain
    assert to_q.lora_A[SLOT_ADAPTER].weight.dtype == torch.bfloat16
    feed = {
        "hidden_states": torch.randn(1, 36, 3, 4, 4, dtype=torch.bfloat16),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 8, 32, dtype=torch.bfloat16),
        "return_dict": False,
    }
    with torch.no_grad():
        assert expert(**feed)[0].shape == (1, 16, 3, 4, 4)


def test_load_puts_the_compile_slot_in_before_fp8_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The order of a compute + regional load, each step replaced by a recorder."""
    from wanforge.engine import loading

    order: list[str] = []
    monkeypatch.setattr("wanforge.engine.fp8.choose_fp8", lambda *_a, **_k: "compute")
    monkeypatch.setattr(loading, "prepare_slots", lambda experts, **_k: order.append("slots"))
    monkeypatch.setattr(loading, "apply_fp8_compute", lambda experts: order.append("fp8"))
    monkeypatch.setattr(loading, "compile_experts", lambda experts, **_k: order.append("compile"))
    loaded = load_pipeline("demo", fp8="compute", compile="regional")
    assert (loaded.fp8, loaded.compile) == ("compute", "regional")
    assert order == ["slots", "fp8", "fp8", "compile"]
