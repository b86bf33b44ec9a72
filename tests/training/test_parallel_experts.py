"""Both experts trained at once, each on its own device (a worker with two GPUs): the same LoRAs
as one after the other, progress from both, a cancel or an error stopping both."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_trainer import moving_square_clips
from wanforge.engine.demo import build_demo_components
from wanforge.training.checkpoint import checkpoint_path, load_checkpoint
from wanforge.training.lora import lora_modules
from wanforge.training.run import TrainParams, as_pipeline, train_lora
from wanforge.training.timesteps import EXPERTS
from wanforge.training.trainer import ExpertTrainer, TrainingCancelled, TrainProgress, train_in_parallel

PARAMS = TrainParams(steps=5, learning_rate=1e-2, lora_rank=4, checkpoint_every=2, seed=3, eval_samples=1)


def test_parallel_experts_train_the_same_loras_as_one_after_the_other(tmp_path: Path) -> None:
    clips = moving_square_clips(2)
    straight = train_lora(build_demo_components(), clips, PARAMS, tmp_path / "straight", "x", device="cpu")
    seen: list[TrainProgress] = []
    threads: set[str] = set()

    def on_progress(p: TrainProgress) -> None:
        seen.append(p)
        threads.add(threading.current_thread().name)

    pipe = as_pipeline(build_demo_components())
    both = train_lora(
        pipe, clips, PARAMS, tmp_path / "both", "x", on_progress, device="cpu", second_device="cpu"
    )
    assert both.metrics["parallel_experts"] is True and straight.metrics["parallel_experts"] is False
    assert threads == {"train-high_noise", "train-low_noise"}  # each expert in its own thread
    for e in EXPERTS:
        assert [p.step for p in seen if p.expert == e] == [1, 2, 3, 4, 5]
        a = load_checkpoint(checkpoint_path(tmp_path / "straight", e))
        b = load_checkpoint(checkpoint_path(tmp_path / "both", e))
        assert a is not None and b is not None and a.step == b.step == 5
        for key, value in a.lora.items():
            torch.testing.assert_close(b.lora[key], value, rtol=0, atol=1e-6)
        assert b.losses == pytest.approx(a.losses, abs=1e-6)
    for mine, theirs in (
        (both.high_noise_path, straight.high_noise_path),
        (both.low_noise_path, straight.low_noise_path),
    ):
        exported, reference = load_file(mine), load_file(theirs)
        assert exported.keys() == reference.keys()
        assert all(torch.equal(exported[k], reference[k]) for k in reference)
    assert not lora_modules(pipe.transformer) and not lora_modules(pipe.transformer_2)
    assert pipe.transformer.device.type == pipe.transformer_2.device.type == "cpu"


def test_one_expert_left_trains_alone(tmp_path: Path) -> None:
    """A resumed job whose high-noise expert has finished has nothing to run in parallel."""
    clips = moving_square_clips(1)
    job = tmp_path / "job"

    def stop_at_low(p: TrainProgress) -> None:
        if p.expert == "low_noise":
            raise TrainingCancelled("stop")

    with pytest.raises(TrainingCancelled):
        train_lora(build_demo_components(), clips, PARAMS, job, "x", stop_at_low, device="cpu")
    result = train_lora(build_demo_components(), clips, PARAMS, job, "x", device="cpu", second_device="cpu")
    assert result.metrics["parallel_experts"] is False
    assert result.metrics["low_noise"]["steps"] == 5


def test_a_cancel_stops_both_experts(tmp_path: Path) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def should_cancel() -> bool:
        with lock:
            calls.append(1)
            return len(calls) > 4

    pipe = as_pipeline(build_demo_components())
    with pytest.raises(TrainingCancelled):
        train_lora(
            pipe,
            moving_square_clips(1),
            PARAMS,
            tmp_path,
            "x",
            should_cancel=should_cancel,
            device="cpu",
            second_device="cpu",
        )
    steps = {e: load_checkpoint(checkpoint_path(tmp_path, e)) for e in EXPERTS}
    assert all(c is None or c.step < PARAMS.steps for c in steps.values())
    assert not lora_modules(pipe.transformer) and not lora_modules(pipe.transformer_2)


def test_an_error_in_one_expert_stops_the_other_and_is_raised(tmp_path: Path) -> None:
    pipe = as_pipeline(build_demo_components())

    def on_progress(p: TrainProgress) -> None:
        if p.expert == "low_noise" and p.step == 2:
            raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        train_lora(
            pipe,
            moving_square_clips(1),
            PARAMS,
            tmp_path,
            "x",
            on_progress,
            device="cpu",
            second_device="cpu",
        )
    assert not lora_modules(pipe.transformer) and not lora_modules(pipe.transformer_2)


def test_two_cuda_experts_on_one_gpu_are_refused() -> None:
    trainers = [
        ExpertTrainer.__new__(ExpertTrainer),
        ExpertTrainer.__new__(ExpertTrainer),
    ]
    for t in trainers:
        t.device = torch.device("cuda:0")
        t.step = 0
        t.config = PARAMS.expert_config("high_noise")
    with pytest.raises(ValueError, match="a device each"):
        train_in_parallel(trainers)


def test_the_second_device_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.training.synthetic import make_dataset_zip
    from wanforge.config import Settings
    from wanforge.engine.loading import load_pipeline
    from wanforge.training.job import TrainOptions, parallel_device, train_from_zip

    cpu = torch.device("cpu")
    assert parallel_device("off", cpu) is None
    assert parallel_device("auto", cpu) is None  # no second GPU on a CPU worker
    assert parallel_device("cpu", cpu) == cpu
    with pytest.raises(ValueError, match=r"names cuda:1, but this worker sees 0 GPU\(s\)"):
        parallel_device("cuda:1", cpu)  # this CPU machine: no GPU to name
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # a worker given two GPUs
    assert parallel_device("cuda:1", torch.device("cuda", 0)) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"names cuda:7, but this worker sees 2 GPU\(s\)"):
        parallel_device("cuda:7", torch.device("cuda", 0))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="the model's own device"):
        parallel_device("cuda:0", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="train_second_device"):
        Settings(train_second_device="gpu2")
    options = TrainOptions.from_settings(Settings(train_second_device="cpu"))
    assert options.second_device == "cpu"
    data = make_dataset_zip(tmp_path / "d.zip", {"a.mp4": "p3r5on waves"}, frames=17, width=48, height=32)
    loaded = load_pipeline("demo", device="cpu")
    params = TrainParams(steps=2, eval_samples=0, lora_rank=4)
    trained = train_from_zip(loaded, data, tmp_path / "job", params, output_stem="x", options=options)
    assert trained.result.metrics["parallel_experts"] is True


def test_a_second_device_without_an_index_is_the_model_s_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """WANFORGE_TRAIN_SECOND_DEVICE=cuda (the pattern allows it) is cuda:0: on a worker whose model
    is on cuda:0 both experts would share one GPU, which the setting is not for."""
    from wanforge.training.job import parallel_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"names the model's own device \(cuda\)"):
        parallel_device("cuda", torch.device("cuda", 0))
    assert parallel_device("cuda", torch.device("cuda", 1)) == torch.device("cuda")


def test_releasing_cached_memory_empties_the_expert_s_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the second expert's thread the current device is cuda:0: the release makes the expert's
    own device current first (recorders here: no GPU on this machine)."""
    import contextlib

    from wanforge.training.trainer import release_cached_memory

    events: list[str] = []

    @contextlib.contextmanager
    def current(device: torch.device) -> Iterator[None]:
        events.append(f"enter {device}")
        yield
        events.append(f"exit {device}")

    monkeypatch.setattr(torch.cuda, "device", current)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    release_cached_memory(torch.device("cuda:1"))
    assert events == ["enter cuda:1", "empty_cache", "exit cuda:1"]
    release_cached_memory(torch.device("cpu"))
    assert len(events) == 3
