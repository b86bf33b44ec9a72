"""The trainer's memory options on the tiny bf16 model: each against the plain path, with its bound.

- ``lora_compute="base"``: loss and LoRA gradients within a bound of peft's float32 path, and the
  float32 copies of the LoRA'd linears' inputs are gone from what autograd saves;
- ``fp8_base``: the base stored as fp8 while it trains, loss and gradients within a bound, and the
  original weights back afterwards;
- ``offload="activations"``: exact (the same gradients, bit for bit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.test_trainer import moving_square_clips
from wanforge.engine.demo import build_demo_components, build_transformer
from wanforge.training.lora import add_lora, lora_modules, lora_parameters
from wanforge.training.memory import (
    FP8_STORAGE,
    Fp8Base,
    MemoryOptions,
    lora_compute_in_base_dtype,
    offload_context,
    saved_tensors,
)
from wanforge.training.run import TrainParams, as_pipeline, train_lora
from wanforge.training.timesteps import EXPERTS
from wanforge.training.trainer import Batch, flow_matching_loss

TOKENS, TEXT_TOKENS, DIM, FFN = 12, 8, 24, 32  # the demo model on the batch below


def bf16_model() -> Any:
    """The demo transformer in bf16 with a LoRA whose B is not zero (so every gradient flows)."""
    torch.manual_seed(0)
    model: Any = build_transformer()
    model.to(torch.bfloat16)
    add_lora(model, rank=4, alpha=4, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in lora_parameters(model).items():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.02)
    return model


def batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        latents=torch.randn(1, 16, 2, 4, 6, generator=g),
        condition=torch.randn(1, 20, 2, 4, 6, generator=g),
        text=torch.randn(1, TEXT_TOKENS, 32, generator=g),
        noise=torch.randn(1, 16, 2, 4, 6, generator=g),
        timesteps=torch.tensor([950.0]),
    )


def loss_and_grads(
    model: Any, options: MemoryOptions = MemoryOptions()
) -> tuple[float, dict[str, torch.Tensor]]:
    with offload_context(options, torch.device("cpu")):
        loss = flow_matching_loss(model, batch())
    loss.backward()
    return float(loss.detach()), {
        k: p.grad.clone() for k, p in lora_parameters(model).items() if p.grad is not None
    }


def worst_relative_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    assert got.keys() == want.keys() and len(want) == 2 * 2 * 10  # 2 blocks x 10 linears x (A, B)
    return max(float((got[k] - want[k]).norm() / want[k].norm()) for k in want)


def test_the_base_dtype_lora_path_matches_the_float32_path_within_a_bound() -> None:
    ref_loss, ref = loss_and_grads(bf16_model())
    model = bf16_model()
    assert lora_compute_in_base_dtype(model) == 20
    loss, grads = loss_and_grads(model)
    assert all(g.dtype == torch.float32 for g in grads.values())  # float32 master weights get them
    assert abs(loss - ref_loss) <= 1e-3 * ref_loss  # measured: 7e-5 relative
    assert worst_relative_error(grads, ref) <= 0.05  # measured: 0.021 (bf16 has 8 bits of mantissa)


def block_saved_tensors(model: Any) -> list[torch.Tensor]:
    """What autograd keeps for backward of one block's forward, parameters left out."""
    captured: dict[str, Any] = {}

    def grab(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.update(args=args, kwargs=kwargs)

    handle = model.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        flow_matching_loss(model, batch())
    handle.remove()
    args = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a for a in captured["args"]]
    saved: list[torch.Tensor] = []
    with saved_tensors(saved):
        model.blocks[0](*args, **captured["kwargs"])
    params = {p.data_ptr() for p in model.parameters()}
    return [t for t in saved if t.data_ptr() not in params]


def float32_lora_inputs(saved: list[torch.Tensor]) -> int:
    """float32 copies of a LoRA'd linear's input: (video or text tokens, dim or ffn) float32."""
    return sum(
        t.dtype == torch.float32
        and t.dim() == 2
        and t.shape[0] in (TOKENS, TEXT_TOKENS)
        and t.shape[1] in (DIM, FFN)
        for t in saved
    )


def unique_bytes(saved: list[torch.Tensor]) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    return sum(storages.values())


def test_the_base_dtype_lora_path_saves_no_float32_copies_of_the_inputs() -> None:
    float32_path = block_saved_tensors(bf16_model())
    model = bf16_model()
    lora_compute_in_base_dtype(model)
    base_path = block_saved_tensors(model)
    # peft's path: one float32 copy per LoRA'd linear (self q, k, v, out; cross q, k, v, out; ffn x 2)
    assert float32_lora_inputs(float32_path) == 10
    assert float32_lora_inputs(base_path) == 0
    assert unique_bytes(base_path) < unique_bytes(float32_path)


def test_fp8_storage_of_the_base_is_within_a_bound_and_undone() -> None:
    ref_loss, ref = loss_and_grads(bf16_model())
    model = bf16_model()
    originals = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    lora_compute_in_base_dtype(model)
    fp8 = Fp8Base.enable(model, torch.bfloat16)
    stored = {n: p.dtype for n, p in model.named_parameters()}
    assert stored["blocks.0.attn1.to_q.base_layer.weight"] == FP8_STORAGE
    assert stored["blocks.1.ffn.net.2.base_layer.weight"] == FP8_STORAGE
    assert stored["blocks.0.attn1.to_q.lora_A.wanforge_train.weight"] == torch.float32
    assert stored["patch_embedding.weight"] == torch.bfloat16  # diffusers' skip list
    cast = sum(d == FP8_STORAGE for d in stored.values())
    assert cast == 2 * 20  # 2 blocks x 10 linears x (weight, bias)
    loss, grads = loss_and_grads(model)
    assert abs(loss - ref_loss) <= 0.01 * ref_loss  # measured: 9e-4 relative
    assert worst_relative_error(grads, ref) <= 0.25  # measured: 0.12 (e4m3 has 3 bits of mantissa)
    fp8.restore(model)
    after = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    assert after.keys() == originals.keys()
    assert all(torch.equal(after[k], originals[k]) and after[k].dtype == originals[k].dtype for k in after)
    assert not any(hasattr(m, "_diffusers_hook") or "forward" in m.__dict__ for m in model.modules())


def test_activation_offload_is_exact() -> None:
    ref_loss, ref = loss_and_grads(bf16_model())
    loss, grads = loss_and_grads(bf16_model(), MemoryOptions(offload="activations"))
    assert loss == ref_loss
    assert all(torch.equal(grads[k], ref[k]) for k in ref)


def test_fp8_base_needs_the_base_dtype_lora_path() -> None:
    with pytest.raises(ValueError, match="fp8_base needs lora_compute='base'"):
        MemoryOptions(lora_compute="float32", fp8_base=True)


def test_a_run_with_fp8_base_and_offload_trains_and_leaves_the_pipeline_as_found(tmp_path: Path) -> None:
    pipe = as_pipeline(build_demo_components())
    before = {
        name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()}
        for name in ("transformer", "transformer_2")
    }
    memory = MemoryOptions(fp8_base=True, offload="activations")
    params = TrainParams(steps=2, lora_rank=4, eval_samples=1, memory=memory)
    result = train_lora(pipe, moving_square_clips(1), params, tmp_path, "x", device="cpu")
    assert result.high_noise_path.is_file() and result.low_noise_path.is_file()
    for e in EXPERTS:
        assert result.metrics[e]["steps"] == 2.0
    for name, state in before.items():
        model = getattr(pipe, name)
        assert not lora_modules(model)
        after = model.state_dict()
        assert after.keys() == state.keys()
        assert all(torch.equal(after[k], state[k]) and after[k].dtype == state[k].dtype for k in state)
        assert not any(hasattr(m, "_diffusers_hook") or "forward" in m.__dict__ for m in model.modules())


def test_fp8_storage_keeps_each_linears_upcast_weight_for_backward() -> None:
    # why the preflight counts one block's bf16 weights with checkpointing and all without
    model = bf16_model()
    lora_compute_in_base_dtype(model)
    Fp8Base.enable(model, torch.bfloat16)
    shapes = {(DIM, DIM), (FFN, DIM), (DIM, FFN)}  # the block linears' weights
    upcast = [t for t in block_saved_tensors(model) if t.dtype == torch.bfloat16 and tuple(t.shape) in shapes]
    assert len(upcast) == 10  # one per linear: self and cross q, k, v, out; ffn x 2
