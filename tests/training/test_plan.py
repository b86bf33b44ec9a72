"""The memory plan of a LoRA training job per card: fits, gradient checkpointing, the advice, and
the training attention backend (never sage or FA3: no backward)."""

from __future__ import annotations

from dataclasses import replace

from wanforge.engine.plan import CARDS, ModelSizes, card_from_name
from wanforge.training.plan import TrainingRequest, plan_training

A14B = ModelSizes.A14B
SIX = ("h100-80gb", "h200-141gb", "a100-80gb", "l40s-48gb", "rtx4090-24gb", "32gb")


def test_training_never_runs_sage_or_flash_attention_3() -> None:
    for name in ("h100-80gb", "l40s-48gb"):
        card = replace(CARDS[name], flash_attn_3=True, sageattention=True)
        assert plan_training(card, A14B).training_attention == "_native_cudnn"
    no_cudnn = replace(CARDS["h100-80gb"], flash_attn_3=True, cudnn=False)
    assert plan_training(no_cudnn, A14B).training_attention == "native"


# (fits, gradient checkpointing) for 33 and 81 frames at 480x832, rank 32, default options
TRAINING = {
    "h100-80gb": [(True, True), (True, True)],
    "h200-141gb": [(True, True), (True, True)],
    "a100-80gb": [(True, True), (True, True)],
    "l40s-48gb": [(True, True), (False, True)],
    "rtx4090-24gb": [(False, True), (False, True)],
    "32gb": [(False, True), (False, True)],
}


def test_training_plans_for_each_card() -> None:
    for name in SIX:
        plans = [plan_training(card_from_name(name), A14B, TrainingRequest(frames=f)) for f in (33, 81)]
        assert [(p.fits, p.gradient_checkpointing) for p in plans] == TRAINING[name], name
        for p in plans:
            assert p.memory_mode == "trainer" and p.resident == ("transformer",)
    assert plan_training(CARDS["l40s-48gb"], A14B, TrainingRequest(frames=81)).advice[0] == (
        "set WANFORGE_TRAIN_FP8_BASE=1 (about 40.2 GiB)"
    )
    assert plan_training(CARDS["rtx4090-24gb"], A14B, TrainingRequest(frames=33)).advice == (
        "set WANFORGE_TRAIN_FP8_BASE=1 and WANFORGE_TRAIN_OFFLOAD=activations (about 21.4 GiB)",
    )
    fp8_offload = TrainingRequest(frames=33, fp8_base=True, offload=True)
    assert plan_training(CARDS["rtx4090-24gb"], A14B, fp8_offload).fits is True  # 21.4 of 21.5 GiB available
    assert plan_training(CARDS["rtx4090-24gb"], A14B, replace(fp8_offload, frames=81)).fits is False
