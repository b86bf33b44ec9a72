"""`train_lora`: a training set in, the two Wan 2.2 I2V LoRA files out, resumable from its job dir.

Layout of a job directory:

    {job_dir}/cache.pt                           encoded latents, conditions and text
    {job_dir}/checkpoints/{expert}.pt            latest checkpoint of each expert
    {job_dir}/{stem}_high_noise.safetensors      the LoRA of `transformer` (t >= boundary)
    {job_dir}/{stem}_low_noise.safetensors       the LoRA of `transformer_2` (t < boundary)

Calling `train_lora` again on the same directory continues each expert from its checkpoint
and skips an expert that has finished.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline

from wanforge.training.checkpoint import checkpoint_path
from wanforge.training.export import LoraInfo, export_lora, lora_file_name
from wanforge.training.latents import ClipLike, LatentCache, load_or_build_cache
from wanforge.training.lora import lora_state_dict, move_to, remove_lora
from wanforge.training.memory import MemoryOptions
from wanforge.training.timesteps import EXPERTS, Expert, expert_sigma_range
from wanforge.training.trainer import (
    CancelCheck,
    ExpertConfig,
    ExpertTrainer,
    ProgressCallback,
    load_resume_state,
    train_in_parallel,
    train_sequentially,
)

ExportDtype = Literal["bfloat16", "float16", "float32"]
EXPERT_ATTRS: dict[Expert, str] = {"high_noise": "transformer", "low_noise": "transformer_2"}


@dataclass(frozen=True)
class TrainParams:
    trigger_word: str = "p3r5on"
    steps: int = 100  # optimizer steps per expert
    learning_rate: float = 2e-4
    lora_rank: int = 32
    lora_alpha: float | None = None  # None: alpha = rank
    seed: int = 0
    caption_dropout: float = 0.0
    checkpoint_every: int = 25
    boundary: float = 0.9
    shift: float = 5.0
    batch_size: int = 1
    gradient_checkpointing: bool = True
    eval_samples: int = 4  # fixed samples whose loss is reported before and after training
    export_dtype: ExportDtype = "bfloat16"
    base_model: str | None = None  # written into the files; default: the pipeline's path
    memory: MemoryOptions = field(
        default_factory=MemoryOptions
    )  # how each expert is held while it trains (memory.py)

    def validate(self) -> None:
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.learning_rate >= 0, "learning_rate must be >= 0"),
            (self.lora_rank >= 1, "lora_rank must be >= 1"),
            (self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha must be > 0"),
            (0.0 <= self.caption_dropout <= 1.0, "caption_dropout must be in [0, 1]"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (0.0 < self.boundary < 1.0, "boundary must be in (0, 1)"),
            (self.shift > 0, "shift must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_samples >= 0, "eval_samples must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def alpha(self) -> float:
        return float(self.lora_rank if self.lora_alpha is None else self.lora_alpha)

    def expert_config(self, expert: Expert) -> ExpertConfig:
        """One expert's share of these parameters (the fields both classes name alike, plus rank/alpha)."""
        shared = {f.name for f in fields(ExpertConfig)} & {f.name for f in fields(self)}
        return ExpertConfig(
            expert=expert,
            rank=self.lora_rank,
            alpha=self.lora_alpha,
            **{name: getattr(self, name) for name in shared},
        )


@dataclass
class TrainResult:
    high_noise_path: Path
    low_noise_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)


class PipelineComponents(Protocol):
    """A model's components and its name (the engine's `DemoComponents` is one)."""

    name: str

    def as_kwargs(self) -> dict[str, Any]: ...


PipelineSource = WanImageToVideoPipeline | PipelineComponents | Mapping[str, Any]


def as_pipeline(source: PipelineSource) -> WanImageToVideoPipeline:
    """A pipeline, its components (`PipelineComponents`) or the keyword arguments that build one."""
    if isinstance(source, WanImageToVideoPipeline):
        return source
    kwargs = dict(source) if isinstance(source, Mapping) else source.as_kwargs()
    return WanImageToVideoPipeline(**kwargs)


def _expert(pipe: WanImageToVideoPipeline, expert: Expert) -> WanTransformer3DModel:
    model = getattr(pipe, EXPERT_ATTRS[expert], None)
    if model is None:
        raise ValueError(f"the pipeline has no {EXPERT_ATTRS[expert]} (a Wan 2.2 A14B has both experts)")
    # The engine's cached generation adapters may be on it: the trainer adds its own beside them,
    # trains with only its own active, and removes only its own (`remove_lora`). A trainer adapter
    # left by a run that failed before its cleanup is removed first.
    remove_lora(model)
    return model


def dataset_summary(samples: Sequence[ClipLike]) -> dict[str, Any]:
    sizes = sorted({f"{s.frames.shape[2]}x{s.frames.shape[1]}" for s in samples})
    return {
        "clips": len(samples),
        "frames": sorted({int(s.frames.shape[0]) for s in samples}),
        "sizes": sizes,
        "captions": len({s.caption for s in samples}),
    }


def _expert_metrics(
    step: int, losses: Sequence[float], metrics: Mapping[str, float], resumed_from: int
) -> dict[str, float]:
    tail = losses[-10:]
    return {
        **metrics,
        "steps": float(step),
        "resumed_from": float(resumed_from),
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
    }


def train_lora(
    pipe_or_components: PipelineSource,
    dataset_samples: Sequence[ClipLike],
    params: TrainParams,
    job_dir: Path,
    output_stem: str,
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    device: torch.device | str | None = None,
    dataset_info: Mapping[str, Any] | None = None,
    second_device: torch.device | str | None = None,
) -> TrainResult:
    """Train both experts' LoRAs (high noise, then low noise) and export them into `job_dir`.

    Three stages: cache the encoded dataset, train the experts that have not finished (each
    exported as soon as it is done), export the experts that had finished in an earlier run.
    The pipeline is left as found: its experts without adapters and every module back on the
    device it came on. Raises `TrainingCancelled` when `should_cancel()` says so between steps.
    With `second_device` (a worker's second GPU), the low-noise expert trains there while the
    high-noise one trains on `device`, at the same time; each expert's steps are the ones it
    would run alone (`trainer.train_in_parallel`).
    """
    params.validate()
    samples = list(dataset_samples)
    if not samples:
        raise ValueError("no training samples")
    started = time.monotonic()
    run_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = as_pipeline(pipe_or_components)
    models = {e: _expert(pipe, e) for e in EXPERTS}
    job_dir.mkdir(parents=True, exist_ok=True)
    configs = {e: params.expert_config(e) for e in EXPERTS}
    resume = {e: load_resume_state(configs[e], checkpoint_path(job_dir, e)) for e in EXPERTS}
    pending = [e for e in EXPERTS if (ckpt := resume[e]) is None or ckpt.step < params.steps]
    exporter = _Exporter(
        params,
        base_model=_base_model(pipe_or_components, pipe, params),
        dataset={**dataset_summary(samples), **(dataset_info or {})},
        paths={e: job_dir / lora_file_name(output_stem, e) for e in EXPERTS},
    )
    metrics: dict[str, Any] = {"cache_s": 0.0, "cache_loaded": False}
    devices = {
        name: module.device
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module) and hasattr(module, "device")
    }
    try:
        if pending:
            t0 = time.monotonic()
            cache, metrics["cache_loaded"] = _cache(pipe, models, samples, job_dir, run_device)
            metrics["cache_s"] = time.monotonic() - t0
            parallel = second_device is not None and len(pending) == 2
            placed: dict[Expert, torch.device] = {e: run_device for e in EXPERTS}
            if parallel and second_device is not None:
                placed["low_noise"] = torch.device(second_device)
            trainers = [
                ExpertTrainer(configs[e], models[e], cache, placed[e], checkpoint_path(job_dir, e), resume[e])
                for e in pending
            ]
            for e in pending:
                resume[e] = None  # the trainer holds it until it has restored it
            metrics.update(_train_pending(trainers, exporter, on_progress, should_cancel, parallel=parallel))
            metrics["parallel_experts"] = parallel
        for e in EXPERTS:
            finished = resume[e]
            if e not in pending and finished is not None:
                exporter.export(e, finished.lora)
                metrics[e] = _expert_metrics(finished.step, finished.losses, finished.metrics, finished.step)
    finally:
        for model in models.values():
            remove_lora(model)
        for name, dev in devices.items():
            getattr(pipe, name).to(dev)
    metrics["total_s"] = time.monotonic() - started
    metrics["memory"] = {**asdict(params.memory), "gradient_checkpointing": params.gradient_checkpointing}
    return TrainResult(exporter.paths["high_noise"], exporter.paths["low_noise"], metrics)


def _base_model(source: PipelineSource, pipe: WanImageToVideoPipeline, params: TrainParams) -> str:
    """What the exported files name as their base: the parameter, the components' name, the path."""
    if params.base_model:
        return params.base_model
    if isinstance(source, WanImageToVideoPipeline | Mapping):
        return str(pipe.name_or_path or "unknown")
    return source.name


def _cache(
    pipe: WanImageToVideoPipeline,
    models: Mapping[Expert, WanTransformer3DModel],
    samples: Sequence[ClipLike],
    job_dir: Path,
    device: torch.device,
) -> tuple[LatentCache, bool]:
    """Stage 1: the encoded dataset, from `cache.pt` or built now (and whether it was loaded)."""
    for model in models.values():  # the encoders get the device to themselves while caching
        move_to(model, "cpu")
    return load_or_build_cache(pipe, samples, job_dir / "cache.pt", device)


def _train_pending(
    trainers: Sequence[ExpertTrainer],
    exporter: _Exporter,
    on_progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
    *,
    parallel: bool = False,
) -> dict[str, Any]:
    """Stage 2: train each unfinished expert, in turn or both at once on their own devices,
    exporting each as soon as it finishes."""
    schedule = train_in_parallel if parallel else train_sequentially
    timing = schedule(
        trainers,
        on_progress,
        should_cancel,
        on_finished=lambda t: exporter.export(t.expert, lora_state_dict(t.transformer)),
    )
    return {
        t.expert: {
            **_expert_metrics(t.step, t.losses, t.metrics, t.resumed_from),
            **timing.get(t.expert, {}),
        }
        for t in trainers
    }


@dataclass(frozen=True)
class _Exporter:
    """Stage 3: one expert's LoRA weights to its `.safetensors` file, with the run's metadata."""

    params: TrainParams
    base_model: str
    dataset: Mapping[str, Any]
    paths: Mapping[Expert, Path]

    def export(self, expert: Expert, lora: Mapping[str, torch.Tensor]) -> None:
        params = self.params
        low, high = expert_sigma_range(expert, params.boundary, params.shift).timestep_range
        info = LoraInfo(
            expert=expert,
            trigger_word=params.trigger_word,
            rank=params.lora_rank,
            alpha=params.alpha,
            steps=params.steps,
            learning_rate=params.learning_rate,
            timestep_range=(low, high),
            base_model=self.base_model,
            dataset=self.dataset,
        )
        export_lora(lora, self.paths[expert], info, getattr(torch, params.export_dtype))
