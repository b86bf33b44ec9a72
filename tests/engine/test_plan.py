"""The memory plan: what each card gets for generation and training (from ModelSizes.A14B and the
formulas calibrated against the full-size simulation; tests/engine/test_simulate.py holds those)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wanforge.engine.loading import LoadedModel
from wanforge.engine.plan import (
    CARDS,
    GIB,
    Card,
    ModelSizes,
    Options,
    card_from_name,
    decode_activation_bytes,
    plan_generation,
)

A14B = ModelSizes.A14B
SIX = ("h100-80gb", "h200-141gb", "a100-80gb", "l40s-48gb", "rtx4090-24gb", "32gb")
TEO = "text_encoder_offload"

# (memory mode, fp8) at 480p, 720p and native 1080p, 81 frames, per card
DEFAULTS = {  # the settings' defaults: WANFORGE_FP8=off
    "h100-80gb": [("gpu", "off"), (TEO, "off"), (TEO, "off")],
    "h200-141gb": [("gpu", "off"), ("gpu", "off"), ("gpu", "off")],
    "a100-80gb": [("gpu", "off"), (TEO, "off"), (TEO, "off")],
    "l40s-48gb": [("model_offload", "off"), ("model_offload", "off"), ("group_offload", "off")],
    "rtx4090-24gb": [("group_offload", "off")] * 3,
    "32gb": [("group_offload", "off")] * 3,
}
FP8_AUTO = {
    "h100-80gb": [("gpu", "compute")] * 3,
    "h200-141gb": [("gpu", "compute")] * 3,
    "a100-80gb": [("gpu", "off"), (TEO, "off"), (TEO, "off")],  # sm80: storage would not move less
    "l40s-48gb": [(TEO, "compute"), (TEO, "compute"), ("model_offload", "storage")],
    "rtx4090-24gb": [
        ("model_offload", "storage"),
        ("group_offload", "storage"),
        ("group_offload", "storage"),
    ],
    "32gb": [("model_offload", "storage"), ("model_offload", "storage"), ("group_offload", "storage")],
}


@pytest.mark.parametrize(("fp8", "expected"), [("off", DEFAULTS), ("auto", FP8_AUTO)])
def test_the_modes_chosen_for_each_card_and_resolution(
    fp8: str, expected: dict[str, list[tuple[str, str]]]
) -> None:
    for name in SIX:
        chosen = [
            (p.memory_mode, p.fp8)
            for p in (
                plan_generation(card_from_name(name), A14B, Options(fp8=fp8), r)
                for r in ("480p", "720p", "1080p")
            )
        ]
        assert chosen == expected[name], name
        for res in ("480p", "720p", "1080p"):
            plan = plan_generation(card_from_name(name), A14B, Options(fp8=fp8), res)
            assert plan.fits and plan.peak_bytes <= plan.available_bytes, (name, res)


def test_an_80gb_h100_keeps_both_experts_and_the_vae_resident_and_offloads_the_text_encoder() -> None:
    plan = plan_generation(CARDS["h100-80gb"], A14B, Options(), "720p", frames=129)
    assert plan.memory_mode == TEO
    assert plan.resident == ("transformer", "transformer_2", "vae")
    assert plan.weights_bytes == 2 * A14B.expert_bytes + A14B.vae_bytes
    assert not plan.vae_tiled
    # everything resident needs the text encoder's 10.6 GiB more than the card has
    everything = replace(plan, weights_bytes=plan.weights_bytes + A14B.text_encoder_bytes)
    assert everything.peak_bytes > plan.available_bytes


def test_fp8_auto_on_a_24gb_ada_card_does_not_pick_compute() -> None:
    """torchao converts a bf16 expert (26.7 GiB) on the GPU: it cannot be moved onto 24 GB."""
    card = CARDS["rtx4090-24gb"]
    assert card.fp8_compute  # sm89 with torchao: compute would run, were the expert to fit
    for res in ("480p", "720p"):
        plan = plan_generation(card, A14B, Options(fp8="auto"), res)
        assert plan.fp8 == "storage"
        assert plan.fits
        assert any("torchao converts each expert on the GPU" in note for note in plan.notes)
    # asked for outright, compute needs both experts resident, which 24 GB cannot hold
    plan = plan_generation(card, A14B, Options(fp8="compute"), "480p")
    assert (plan.fp8, plan.fits) == ("compute", False)
    assert plan.advice[0].startswith("set WANFORGE_FP8=storage (model_offload")


def test_on_48gb_fp8_compute_keeps_720p_activations_and_the_vae_decode_within_the_card() -> None:
    plan = plan_generation(CARDS["l40s-48gb"], A14B, Options(fp8="auto"), "720p")
    assert (plan.memory_mode, plan.fp8, plan.vae_tiled, plan.fits) == (TEO, "compute", True, True)
    assert plan.notes == (
        "the untiled VAE decode does not fit beside the resident weights: the VAE runs tiled",
    )
    untiled = plan_generation(CARDS["l40s-48gb"], A14B, Options(fp8="compute", vae_tiling="off"), "720p")
    assert not untiled.fits
    assert untiled.activation_bytes == decode_activation_bytes(A14B, 1280, 720, 81, tiled=False)  # 17.8 GiB
    assert plan.activation_bytes < 10 * GIB  # tiled, the forward is the largest: 8.2 GiB + its fp8 inputs


def test_training_never_runs_sage_or_flash_attention_3() -> None:
    h100 = replace(CARDS["h100-80gb"], flash_attn_3=True, sageattention=True)
    l40s = replace(CARDS["l40s-48gb"], flash_attn_3=True, sageattention=True)
    assert plan_generation(h100, A14B).attention == "_flash_3"
    assert plan_generation(l40s, A14B).attention == "sage"
    for card in (h100, l40s):
        assert plan_generation(card, A14B).training_attention == "_native_cudnn"
    no_cudnn = replace(h100, cudnn=False)
    assert plan_generation(no_cudnn, A14B).training_attention == "native"
    assert plan_generation(no_cudnn, A14B, Options(attention="sage")).training_attention == "native"


def test_settings_that_cannot_run_are_refused() -> None:
    with pytest.raises(ValueError, match=r"WANFORGE_FP8=compute needs a CUDA GPU of compute capability 8\.9"):
        plan_generation(CARDS["a100-80gb"], A14B, Options(fp8="compute"))
    with pytest.raises(ValueError, match="WANFORGE_MEMORY_MODE=model_offload cannot be used with it"):
        plan_generation(CARDS["h100-80gb"], A14B, Options(fp8="compute", memory_mode="model_offload"))
    with pytest.raises(ValueError, match="WANFORGE_COMPILE=regional cannot run with group offload"):
        plan_generation(CARDS["rtx4090-24gb"], A14B, Options(compile="regional"), "720p")
    with pytest.raises(ValueError, match="WANFORGE_MEMORY_MODE must be one of gpu, text_encoder_offload"):
        plan_generation(CARDS["h100-80gb"], A14B, Options(memory_mode="cpu"))


def test_a_plan_that_does_not_fit_says_what_would() -> None:
    plan = plan_generation(CARDS["rtx4090-24gb"], A14B, Options(memory_mode="gpu"), "720p")
    assert not plan.fits
    assert plan.advice == ("unset WANFORGE_MEMORY_MODE (group_offload, 18.2 GiB)",)
    nothing = plan_generation(card_from_name("8gb"), A14B, Options(), "1080p")
    assert not nothing.fits
    assert nothing.advice == ("serve up to 480p (group_offload, 4.6 GiB)",)
    assert plan_generation(card_from_name("8gb"), A14B, Options(), "480p").vae_tiled  # 7.7 GiB untiled


def test_card_names() -> None:
    assert card_from_name("H100-80GB") == CARDS["h100-80gb"]
    generic = card_from_name("32gb")
    assert (generic.total_bytes, generic.capability) == (32 * GIB, (8, 0))
    assert card_from_name("24gb", capability=(8, 9)).fp8_compute
    for bad in ("h100", "0gb", "-4gb", "lots"):
        with pytest.raises(ValueError, match="unknown GPU"):
            card_from_name(bad)


def test_a_cpu_worker_plans_everything_resident() -> None:
    cpu = Card("cpu", 64 * GIB, 64 * GIB, None)
    plan = plan_generation(cpu, A14B)
    assert (plan.memory_mode, plan.fp8, plan.attention, plan.training_attention) == (
        "gpu",
        "off",
        "native",
        "native",
    )


def test_the_worker_tiles_where_its_plan_needs_it(demo_loaded: LoadedModel) -> None:
    from wanforge.worker.tasks import planned_vae_tiling

    plan = demo_loaded.plan
    assert plan is not None
    untiled = replace(demo_loaded, plan=replace(plan, vae_tiled=False))
    tiled = replace(demo_loaded, plan=replace(plan, vae_tiled=True))
    assert planned_vae_tiling("auto", untiled) == "auto"
    assert planned_vae_tiling("auto", tiled) == "on"  # 720p, which auto alone would not tile
    assert (
        planned_vae_tiling("off", tiled) == "off"
    )  # the operator's word stands (the plan says it may not fit)
    native = replace(tiled, plan=replace(plan, vae_tiled=True, width=1920, height=1088))
    assert planned_vae_tiling("auto", native) == "auto"  # auto tiles 1080p anyway


def test_a_plan_describes_itself_in_one_line() -> None:
    plan = plan_generation(CARDS["h100-80gb"], A14B, Options(), "720p")
    assert plan.describe() == (
        "plan for h100-80gb, 1280x720x81: memory_mode=text_encoder_offload fp8=off attention=_native_cudnn "
        "training_attention=_native_cudnn compile=off vae_tiled=False resident=transformer,transformer_2,vae; "
        "predicted peak 71.6 GiB (weights 53.8, activations 17.8) of 77.1 GiB available: fits"
    )
