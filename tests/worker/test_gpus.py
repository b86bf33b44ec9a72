"""GPU pinning of the embedded workers, as pure functions (no GPU needed)."""

from __future__ import annotations

import pytest

from wanforge.worker.gpus import parse_gpu_list, visible_gpus, worker_gpus

SMI = (
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\n"
    "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)\n"
    "  MIG 3g.40gb     Device  0: (UUID: MIG-cccc)\n"
    "GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-dddd)\n"
)


def test_nvidia_smi_listing_gives_whole_gpus_only() -> None:
    assert parse_gpu_list(SMI) == ["0", "1", "2"]
    assert parse_gpu_list("") == []


@pytest.mark.parametrize(
    ("env", "probe", "expected"),
    [
        ({}, SMI, ["0", "1", "2"]),
        ({}, None, []),  # no driver
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, SMI, ["2", "3"]),  # the operator's choice wins
        ({"CUDA_VISIBLE_DEVICES": "GPU-aaaa, GPU-dddd"}, SMI, ["GPU-aaaa", "GPU-dddd"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, SMI, []),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, SMI, []),
        ({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, SMI, ["1"]),
    ],
)
def test_visible_gpus(env: dict[str, str], probe: str | None, expected: list[str]) -> None:
    assert visible_gpus(env, lambda: probe) == expected


@pytest.mark.parametrize(
    ("gpus", "workers", "expected"),
    [
        ([], 2, [None, None]),
        (["0"], 2, [None, None]),  # one GPU: nothing to choose
        (["0", "1"], 2, ["0", "1"]),
        (["2", "3"], 1, ["2"]),
        (["0", "1", "2"], 5, ["0", "1", "2", "0", "1"]),
        (["0", "1"], 0, []),
    ],
)
def test_each_worker_gets_its_own_gpu(gpus: list[str], workers: int, expected: list[str | None]) -> None:
    assert worker_gpus(gpus, workers) == expected
