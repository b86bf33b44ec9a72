"""The full-size simulation (FakeTensorMode, CPU) and the plan's formulas calibrated against it.

Every simulation here runs the real diffusers modules at full width; the expert at reduced depth
where its figure does not depend on depth (a forward without grad holds one block at a time).
docs/engine.md has the full-size table (benchmarks/simulate_memory.py).
"""

from __future__ import annotations

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from wanforge.engine import plan
from wanforge.engine.simulate import (
    A14B,
    DEVICE,
    SIZES,
    AllocationCounter,
    fake_mode,
    meta_expert,
    simulate_forward,
    simulate_vae_decode,
)

SIZES_A14B = plan.ModelSizes.A14B


def test_the_counter_counts_what_torch_mem_tracker_counts() -> None:
    """torch's own MemTracker and the counter agree on the peak of a real (2-block) expert forward."""
    model = meta_expert(2)
    with fake_mode():
        model.to_empty(device=DEVICE)
        hidden = torch.empty(1, A14B["in_channels"], 5, 30, 52, dtype=torch.bfloat16)
        text = torch.empty(1, 512, A14B["text_dim"], dtype=torch.bfloat16)
        t = torch.tensor([900.0])

        def forward() -> None:
            with torch.no_grad():
                model(hidden_states=hidden, encoder_hidden_states=text, timestep=t, return_dict=False)

        tracker = MemTracker()
        tracker.track_external(model, hidden, text, t)
        with tracker:
            forward()
        tracked = tracker.get_tracker_snapshot("peak")[DEVICE]
        counter = AllocationCounter()
        counter.hold([*model.parameters(), *model.buffers(), hidden, text, t])
        with counter:
            forward()
    assert counter.peak > 2 * 2**30  # the 2 blocks' weights and more
    assert abs(counter.peak - tracked["Total"]) <= 0.001 * tracked["Total"]


def test_a_view_is_counted_once_and_a_freed_tensor_is_uncounted() -> None:
    with fake_mode():
        x = torch.empty(1024, 1024)  # 4 MiB, held before counting starts
        counter = AllocationCounter()
        assert counter.hold([x, x.view(-1)]) == 4 * 2**20
        with counter:
            y = x.t()  # a view: nothing new
            z = x * 2  # 4 MiB more
            del x, y  # its storage freed
            w = z + 1
            assert counter.live == 8 * 2**20
            del w, z
    assert counter.peak == 8 * 2**20
    assert counter.live == 0


def test_an_expert_forward_peak_does_not_depend_on_depth() -> None:
    """Without grad one block runs at a time: the tests may simulate 2 blocks for 40."""
    w, h = SIZES["480p"]
    two, three = simulate_forward(w, h, 17, num_layers=2), simulate_forward(w, h, 17, num_layers=3)
    assert two.activation_bytes == three.activation_bytes
    assert three.resident_bytes > two.resident_bytes


@pytest.mark.parametrize("resolution", ["480p", "720p", "1080p"])
def test_the_forward_formula_is_within_10_percent_of_the_simulation(resolution: str) -> None:
    w, h = SIZES[resolution]
    simulated = simulate_forward(w, h, 81, num_layers=2).activation_bytes
    formula = plan.forward_activation_bytes(SIZES_A14B, w, h, 81)
    assert abs(formula / simulated - 1) <= 0.10


@pytest.mark.parametrize(("resolution", "frames"), [("480p", 5), ("720p", 5)])
def test_the_untiled_decode_formula_is_within_10_percent_of_the_simulation(
    resolution: str, frames: int
) -> None:
    w, h = SIZES[resolution]
    simulated = simulate_vae_decode(w, h, frames).activation_bytes
    formula = plan.decode_activation_bytes(SIZES_A14B, w, h, frames, tiled=False)
    assert abs(formula / simulated - 1) <= 0.10
