"""The attention backend: the fastest one a machine can run, chosen at load; native SDPA set
explicitly gives exactly the frames of diffusers' default path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.conftest import FAST_TEST_PROFILE, smooth_image
from wanforge.engine.attention import (
    TRAINABLE,
    AttentionBackend,
    Platform,
    available_backends,
    choose_backend,
    probe,
    training_backend,
    trial_run,
)
from wanforge.engine.generate import Engine, GenerationRequest
from wanforge.engine.loading import LoadedModel, load_pipeline

H100 = Platform(cuda=True, capability=(9, 0), cudnn=True, flash_attn_3=True, sageattention=True)
A100 = Platform(cuda=True, capability=(8, 0), cudnn=True, flash_attn_3=True, sageattention=True)


@pytest.mark.parametrize(
    ("platform", "best", "available"),
    [
        (H100, "_flash_3", ["_flash_3", "sage", "_native_cudnn", "native"]),
        (A100, "sage", ["sage", "_native_cudnn", "native"]),  # FlashAttention 3 is Hopper only
        (Platform(cuda=True, capability=(9, 0), cudnn=True), "_native_cudnn", ["_native_cudnn", "native"]),
        (Platform(cuda=True, capability=(7, 5), cudnn=True, sageattention=True), "native", ["native"]),
        (Platform(cuda=False), "native", ["native"]),
    ],
)
def test_auto_picks_the_fastest_available(platform: Platform, best: str, available: list[str]) -> None:
    assert available_backends(platform) == available
    assert choose_backend("auto", platform) == best


def test_a_named_backend_must_be_available() -> None:
    assert choose_backend("_native_cudnn", H100) == "_native_cudnn"
    with pytest.raises(ValueError) as info:
        choose_backend("_flash_3", A100)
    assert str(info.value) == (
        "WANFORGE_ATTENTION_BACKEND=_flash_3 is not available on this machine; available: sage, _native_cudnn, native"
    )
    with pytest.raises(ValueError, match="WANFORGE_ATTENTION_BACKEND must be auto or one of"):
        choose_backend("xformers", H100)


def test_a_cpu_has_only_native() -> None:
    assert probe(torch.device("cpu"), library_usable=lambda _name: True) == Platform(cuda=False)
    with pytest.raises(ValueError, match="WANFORGE_ATTENTION_BACKEND=sage is not available"):
        load_pipeline("demo", device="cpu", attention="sage")


def _frames(loaded: LoadedModel) -> tuple[np.ndarray, str]:

    profile = replace(loaded.profile, **FAST_TEST_PROFILE, generation_area=48 * 32)  # type: ignore[arg-type]
    engine = Engine(replace(loaded, profile=profile))
    req = GenerationRequest(smooth_image(48, 32, seed=5), "a cat walks", "", "480p", seed=11, duration_s=1)
    with torch.random.fork_rng(devices=[]):
        result = engine.generate(req)
    return result.frames, result.attention_backend


def test_native_set_explicitly_equals_the_default_path_exactly() -> None:
    explicit = load_pipeline("demo", attention="native")
    default = load_pipeline("demo")
    backends = {
        name: {m.processor._attention_backend for m in pipe.transformer.modules() if hasattr(m, "processor")}
        for name, pipe in (("explicit", explicit.pipe), ("default", default.pipe))
    }
    assert backends == {"explicit": {"native"}, "default": {None}}  # the two paths really differ
    assert (explicit.attention_backend, default.attention_backend) == ("native", "native")
    (a, backend_a), (b, backend_b) = _frames(explicit), _frames(default)
    assert np.array_equal(a, b)
    assert backend_a == backend_b == "native"


@pytest.mark.parametrize(
    ("serving", "training"),
    [
        ("_flash_3", "_native_cudnn"),
        ("sage", "_native_cudnn"),
        ("_native_cudnn", "_native_cudnn"),
        ("native", "native"),
    ],
)
def test_training_runs_a_backend_with_a_backward_pass(serving: AttentionBackend, training: str) -> None:
    # sage's kernel has no backward (q/k/v LoRAs would get no gradient); diffusers' FA3 op has no autograd
    assert training_backend(serving, H100) == training
    assert training in TRAINABLE
    cudnn_failed = replace(H100, failed=(("_native_cudnn", "RuntimeError: no kernel"),))
    assert training_backend(serving, cudnn_failed) == (
        "native" if serving in ("sage", "_flash_3") else serving
    )


def test_a_backend_that_fails_its_trial_run_is_not_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library that imports is not yet a kernel that runs: each candidate runs once at probe
    time (a GPU is faked here: capability, cuDNN and the trial are replaced)."""
    tried: list[str] = []

    def trial(backend: AttentionBackend, _device: torch.device) -> str | None:
        tried.append(backend)
        return "RuntimeError: No available kernel" if backend == "_native_cudnn" else None

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d: (9, 0))
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    platform = probe(torch.device("cuda"), library_usable=lambda name: name == "sage", trial=trial)
    assert tried == ["sage", "_native_cudnn"]  # native needs no trial
    assert available_backends(platform) == ["sage", "native"]
    assert choose_backend("auto", platform) == "sage"
    assert training_backend("sage", platform) == "native"
    with pytest.raises(ValueError) as info:
        choose_backend("_native_cudnn", platform)
    assert str(info.value) == (
        "WANFORGE_ATTENTION_BACKEND=_native_cudnn failed its trial run on this GPU "
        "(RuntimeError: No available kernel); available: sage, native"
    )


def test_the_trial_run_passes_a_working_kernel_and_names_a_failing_one() -> None:
    cpu = torch.device("cpu")
    assert trial_run("native", cpu) is None  # forward and backward run on this CPU
    why = trial_run("_native_cudnn", cpu)  # cuDNN attention has no CPU kernel: a real failure
    assert why is not None and why.startswith("RuntimeError")


def test_the_trainer_swaps_the_backend_for_training_and_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker serving with sage trains on cuDNN SDPA and serves with sage again afterwards (the
    setter is a recorder here: neither sage nor cuDNN attention runs on this CPU)."""
    from tests.training.synthetic import make_dataset_zip
    from wanforge.engine import attention
    from wanforge.training import job
    from wanforge.training.run import TrainParams

    calls: list[str] = []
    during: list[list[str]] = []
    monkeypatch.setattr(attention, "set_backend", lambda _pipe, backend: calls.append(backend))
    monkeypatch.setattr(job, "train_lora", lambda *_a, **_k: during.append(list(calls)))
    loaded = load_pipeline("demo")
    serving_sage = replace(loaded, attention_backend="sage", training_attention_backend="_native_cudnn")
    data = make_dataset_zip(tmp_path / "d.zip", {"a.mp4": "a square slides right"}, frames=20)
    job.train_from_zip(
        serving_sage, data, tmp_path / "work", TrainParams(steps=1, lora_rank=2), output_stem="x"
    )
    assert during == [["_native_cudnn"]]  # the whole run, preflight included, on the trainable one
    assert calls == ["_native_cudnn", "sage"]
