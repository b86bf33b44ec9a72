"""The GPU benchmarks run with --smoke (CPU, tiny config) so they never rot."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

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
    assert all(p["denoise_decode_s"] > 0 for p in row["profiles"].values())
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


def _benchmark(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module(name)


@pytest.mark.parametrize("script", ["gpu_generate", "gpu_acceptance"])
def test_each_expert_is_freed_before_the_next_is_built(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On an 80 GB card two A14B experts do not fit beside each other (defect 7): every earlier
    expert must be gone, compiled graphs and all, when the next one is built."""
    generate = _benchmark("gpu_generate")
    built: list[weakref.ref[torch.nn.Module]] = []
    alive_at_build: list[int] = []

    def build_expert(*args: Any, **kwargs: Any) -> torch.nn.Module:
        alive_at_build.append(sum(ref() is not None for ref in built))
        expert: torch.nn.Module = real_build(*args, **kwargs)
        built.append(weakref.ref(expert))
        return expert

    real_build = generate.build_expert
    monkeypatch.setattr(generate, "build_expert", build_expert)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if script == "gpu_generate":
            assert generate.main(["--smoke", "--fp8", "off,storage,off"]) == 0
        else:  # the acceptance run's forward per option: off, off compiled, storage
            rows = _benchmark("gpu_acceptance").option_rows(
                argparse.Namespace(smoke=True), torch.device("cpu"), "plan: not asked"
            )
            assert [r["error"] for r in rows] == [None] * 6
    finally:
        torch.set_num_threads(threads)
    assert alive_at_build == [0, 0, 0]


def test_gpu_train_defaults_to_the_shipped_training_window() -> None:
    train = _benchmark("gpu_train")
    flags = argparse.Namespace(smoke=False, frames=None, height=None, width=None)
    assert train.window(flags) == train.Shape("train", 33, 480, 832)
    assert train.window(argparse.Namespace(smoke=False, frames=81, height=None, width=None)).frames == 81


@pytest.mark.slow  # it starts a real server and worker process
def test_the_acceptance_run_in_smoke_mode(tmp_path: Path) -> None:
    """The acceptance run's smoke: the real server, engine and trainer on random:tiny, every row."""
    path = tmp_path / "acceptance.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--smoke", "--out", str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(path.read_text())
    assert (result["smoke"], result["model"], result["facts"]["device"]) == (True, "random:tiny", "cpu")
    rows = {r["row"]: r for r in result["rows"]}
    options = [
        f"forward_smoke_fp8-{f}_compile-{c}"
        for f in ("off", "storage", "compute")
        for c in ("off", "regional")
    ]
    assert list(rows) == ["api_480p", "steps_720p", *options, "train_step"]
    assert [r["row"] for r in result["rows"] if r["error"]] == []

    api = rows["api_480p"]
    assert api["video"] == "832x480, 81 frames" and api["seconds"] > 0 and api["inference_ms"] > 0
    steps = rows["steps_720p"]
    assert steps["seconds"] > 0 and steps["memory_mode"] == "gpu" and "steps 2..2 of 40" in steps["what"]
    ran = [o for o in options if rows[o]["skipped"] is None]
    assert ran == options[:3]  # storage is not compiled; compute needs an sm89+ GPU
    assert all(rows[o]["seconds"] > 0 for o in ran)
    assert rows[options[3]]["skipped"].startswith("the engine refuses WANFORGE_COMPILE=regional")
    assert all("needs a CUDA GPU of compute capability 8.9" in rows[o]["skipped"] for o in options[4:])
    train = rows["train_step"]
    assert train["seconds"] > 0 and "rank 32" in train["what"] and train["preflight_estimate_gib"] >= 0
    has_plan = importlib.util.find_spec("wanforge.engine.plan") is not None
    for r in result["rows"]:
        measured = r["skipped"] is None
        assert (r["measured_how"] == "not applicable (CPU)") is measured
        assert (r["plan"] or "").startswith("plan") is measured
        if measured:  # the plan's figure for the same work (the CPU plan of the tiny model)
            assert (r["plan_peak_gib"] is not None and r["plan_peak_gib"] >= 0) is has_plan, r
    if has_plan:
        assert rows["api_480p"]["plan"].startswith("plan: the whole job at 832x480x81, memory_mode=gpu")
        assert rows["forward_smoke_fp8-off_compile-off"]["plan"].startswith("plan formula: one expert")
        assert rows["train_step"]["plan"] == "plan: training, fits"

    table = path.with_suffix(".md").read_text().splitlines()
    assert "on **cpu**" in table[0] and "random:tiny" in table[0]
    assert table[2].startswith("| row | what | seconds |") and len(table) == 4 + len(rows)
