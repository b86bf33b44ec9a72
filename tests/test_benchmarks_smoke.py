"""The GPU benchmarks run with --smoke (CPU, tiny config) so they never rot; both in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_both_gpu_benchmarks_run_in_smoke_mode(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    runs = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "benchmarks" / f"{name}.py"),
                "--smoke",
                "--out",
                str(tmp_path / f"{name}.json"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("gpu_generate", "gpu_train")
    }
    for name, proc in runs.items():
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {err[-2000:]}"

    generate = json.loads((tmp_path / "gpu_generate.json").read_text())
    assert generate["smoke"] is True and len(generate["rows"]) == 1
    row = generate["rows"][0]
    assert (row["attention"], row["compile"]) == ("native", False)
    assert row["forward_s"] > 0 and set(row["vae_decode_s"]) == {"plain", "tiled"}
    assert {k: v["steps"] for k, v in row["profiles"].items()} == {"standard": 40, "ultra_fast": 4}
    standard, fast = row["profiles"]["standard"], row["profiles"]["ultra_fast"]
    assert standard["s_per_step"] == pytest.approx(2 * row["forward_s"], abs=2e-4)  # + the CFG pass
    assert fast["s_per_step"] == pytest.approx(row["forward_s"], abs=1e-4)

    train = json.loads((tmp_path / "gpu_train.json").read_text())
    assert [(r["option"], r["rank"], r["error"]) for r in train["rows"]] == [
        ("checkpointing", 32, None),
        ("no_checkpointing", 32, None),
        ("float32_lora", 32, None),
        ("fp8_base", 32, None),
        ("offload", 32, None),
        ("fp8_base+offload", 32, None),
    ]
    assert all(r["s_per_step"] > 0 and r["estimate_gib"] >= 0 for r in train["rows"])


def test_the_flop_count_of_a14b_at_720p() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_model import A14B, Shape, forward_flops

    shape = Shape("720p", 81, 720, 1280)
    tokens = shape.tokens(A14B["patch_size"])
    assert tokens == 21 * 45 * 80
    d, L, T, F = 5120, tokens, 512, 13824
    expected = 40 * (
        8 * L * d * d + 4 * L * L * d + 4 * L * d * d + 4 * T * d * d + 4 * L * T * d + 4 * L * d * F
    )
    assert forward_flops(A14B, tokens) == expected
