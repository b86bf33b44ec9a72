"""The dual-expert LoRA trainer: one `ExpertTrainer` per expert and a scheduler that drives them.

An `ExpertTrainer` owns everything about one expert's run (its transformer, LoRA, AdamW
state, random generator, step and checkpoint file) and shares nothing with the other expert
except the read-only latent cache. `train_sequentially` trains them one after the other on one
device, keeping only the active expert there; `train_in_parallel` trains both at once, each on its
own device (a worker with two GPUs).

One step: draw clips, caption dropout, a timestep on the expert's side of the boundary and the
noise from the expert's own CPU generator (so that runs are reproducible on any device and a
checkpoint can restore the stream), build `x_t = (1 - sigma) x0 + sigma noise`, feed
`concat(x_t, condition)` at `t = 1000 sigma` and regress the prediction onto `noise - x0`.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from wanforge.training.captions import choose_caption
from wanforge.training.checkpoint import (
    ExpertCheckpoint,
    check_run_key,
    load_checkpoint,
    save_checkpoint,
)
from wanforge.training.latents import LatentCache
from wanforge.training.lora import (
    add_lora,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    move_to,
)
from wanforge.training.memory import (
    Fp8Base,
    MemoryOptions,
    lora_compute_in_base_dtype,
    lora_compute_in_float32,
    offload_context,
)
from wanforge.training.timesteps import EXPERTS, Expert, sample_timesteps, timesteps_to_sigmas

WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
EVAL_SEED_OFFSET = 1_000_003
INIT_SEED_OFFSET = 2_000_003


@dataclass(frozen=True)
class TrainProgress:
    expert: Expert
    step: int
    total_steps: int
    loss: float
    eta_s: float  # for the whole job (both experts), from the mean step time so far


class TrainingCancelled(Exception):
    """`should_cancel()` answered True between two steps."""


ProgressCallback = Callable[[TrainProgress], None]
CancelCheck = Callable[[], bool]


@dataclass(frozen=True)
class ExpertConfig:
    """One expert's share of a run's `TrainParams` (built by `TrainParams.expert_config`, which
    holds every default)."""

    expert: Expert
    steps: int
    learning_rate: float
    rank: int
    alpha: float | None
    seed: int
    caption_dropout: float
    boundary: float
    shift: float
    batch_size: int
    checkpoint_every: int
    gradient_checkpointing: bool
    eval_samples: int
    memory: MemoryOptions = field(default_factory=MemoryOptions)

    def run_key(self) -> dict[str, Any]:
        """What a checkpoint must have been made with to be resumed by this config."""
        key = asdict(self)
        # how the expert is held (checkpointing, memory options) changes memory, not what is trained
        for name in ("steps", "checkpoint_every", "eval_samples", "gradient_checkpointing", "memory"):
            key.pop(name)
        return key

    @property
    def generator_seed(self) -> int:
        return self.seed * 2 + EXPERTS.index(self.expert)


@dataclass
class Batch:
    latents: torch.Tensor  # x0, (B, 16, f, h, w)
    condition: torch.Tensor  # (B, 20, f, h, w)
    text: torch.Tensor  # (B, L, D)
    noise: torch.Tensor  # (B, 16, f, h, w)
    timesteps: torch.Tensor  # (B,), t = 1000 sigma

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(x.to(device) for x in (self.latents, self.condition, self.text, self.noise, self.timesteps))
        )


class _TorchRandom:
    """`random()` from a torch generator, for `captions.choose_caption`."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def random(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))


def draw_batch(cache: LatentCache, config: ExpertConfig, generator: torch.Generator) -> Batch:
    """One training batch; every random choice comes from `generator`, in a fixed order."""
    clips = cache.clips
    first = int(torch.randint(len(clips), (1,), generator=generator))
    shape = clips[first].latents.shape
    same_shape = [i for i, c in enumerate(clips) if c.latents.shape == shape]
    others = torch.randint(len(same_shape), (config.batch_size - 1,), generator=generator).tolist()
    chosen = [clips[first], *(clips[same_shape[j]] for j in others)]
    source = _TorchRandom(generator)
    captions = [
        choose_caption(cache.captions[c.caption_index], source, config.caption_dropout) for c in chosen
    ]
    timesteps = sample_timesteps(config.expert, config.batch_size, config.boundary, config.shift, generator)
    latents = torch.stack([c.latents for c in chosen])
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    text = torch.stack(
        [
            cache.text_embeds[c.caption_index] if caption else cache.empty_embeds
            for c, caption in zip(chosen, captions, strict=True)
        ]
    )
    condition = torch.stack([c.condition for c in chosen])
    return Batch(latents, condition, text, noise, timesteps)


def eval_batches(cache: LatentCache, config: ExpertConfig) -> list[Batch]:
    """Fixed (x0, noise, t) samples for measuring an expert's loss before and after training."""
    generator = torch.Generator().manual_seed(config.generator_seed + EVAL_SEED_OFFSET)
    batches = []
    for i in range(config.eval_samples):
        clip = cache.clips[i % len(cache.clips)]
        t = sample_timesteps(config.expert, 1, config.boundary, config.shift, generator)
        noise = torch.randn((1, *clip.latents.shape), generator=generator)
        text = cache.text_embeds[clip.caption_index][None]
        batches.append(Batch(clip.latents[None], clip.condition[None], text, noise, t))
    return batches


def flow_matching_loss(transformer: WanTransformer3DModel, batch: Batch) -> torch.Tensor:
    """MSE between the prediction at `x_t` and the flow-matching target `noise - x0` (float32)."""
    # the base weights' dtype (bf16 on a GPU); the float32 LoRA params are not the model's dtype.
    # No autocast: the model already computes in its own dtype, and autocast would also run the
    # modules diffusers keeps in float32 (the time embedder) in bf16, unlike inference.
    weight = transformer.patch_embedding.weight
    device, dtype = weight.device, weight.dtype
    batch = batch.to(device)
    sigma = timesteps_to_sigmas(batch.timesteps).view(-1, 1, 1, 1, 1)
    noisy = (1.0 - sigma) * batch.latents + sigma * batch.noise
    model_input = torch.cat([noisy, batch.condition], dim=1).to(dtype)
    pred = transformer(
        hidden_states=model_input,
        timestep=batch.timesteps,
        encoder_hidden_states=batch.text.to(dtype),
        return_dict=False,
    )[0]
    return F.mse_loss(pred.float(), batch.noise - batch.latents)


@torch.no_grad()
def evaluate(transformer: WanTransformer3DModel, batches: Sequence[Batch]) -> float:
    if not batches:
        return float("nan")
    return sum(float(flow_matching_loss(transformer, b)) for b in batches) / len(batches)


def load_resume_state(config: ExpertConfig, checkpoint_file: Path) -> ExpertCheckpoint | None:
    """The checkpoint to resume `config` from, if any; raises if it belongs to another run."""
    checkpoint = load_checkpoint(checkpoint_file)
    if checkpoint is not None:
        check_run_key(checkpoint, config.run_key(), checkpoint_file)
    return checkpoint


class ExpertTrainer:
    """Trains the LoRA of one expert; holds no state shared with any other trainer."""

    def __init__(
        self,
        config: ExpertConfig,
        transformer: WanTransformer3DModel,
        cache: LatentCache,
        device: torch.device,
        checkpoint_file: Path | None = None,
        resume: ExpertCheckpoint | None = None,
    ) -> None:
        if config.steps < 1 or config.batch_size < 1 or config.learning_rate < 0:
            raise ValueError("steps and batch_size must be >= 1 and learning_rate >= 0")
        self.config = config
        self.transformer = transformer
        self.cache = cache
        self.device = device
        self.checkpoint_file = checkpoint_file
        self.generator = torch.Generator().manual_seed(config.generator_seed)
        self.optimizer: torch.optim.AdamW | None = None
        self._fp8: Fp8Base | None = None
        self.losses: list[float] = []
        self.metrics: dict[str, float] = {}
        self._resume = resume
        self.step = self._resume.step if self._resume else 0
        self.resumed_from = self.step

    @property
    def expert(self) -> Expert:
        return self.config.expert

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps

    def activate(self) -> None:
        """Inject the LoRA, move the expert to the device, restore the checkpoint if there is one."""
        init = torch.Generator().manual_seed(self.config.generator_seed + INIT_SEED_OFFSET)
        add_lora(self.transformer, self.config.rank, self.config.alpha, init)
        memory = self.config.memory
        if memory.lora_compute == "base":
            lora_compute_in_base_dtype(self.transformer)
        if memory.fp8_base:  # cast on the CPU, where the original weights stay for `deactivate`
            compute_dtype = self.transformer.patch_embedding.weight.dtype
            self._fp8 = Fp8Base.enable(self.transformer, compute_dtype)
        move_to(self.transformer, self.device)
        if self.config.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        params = list(lora_parameters(self.transformer).values())
        self.optimizer = torch.optim.AdamW(params, lr=self.config.learning_rate, weight_decay=WEIGHT_DECAY)
        ckpt = self._resume
        if ckpt is not None:
            load_lora_state_dict(self.transformer, ckpt.lora)
            self.optimizer.load_state_dict(ckpt.optimizer)
            self.generator.set_state(ckpt.rng_state)
            self.losses, self.metrics = list(ckpt.losses), dict(ckpt.metrics)
            self._resume = None  # free the CPU copy
        else:
            self.metrics["eval_loss_before"] = evaluate(
                self.transformer, eval_batches(self.cache, self.config)
            )

    def train_step(self) -> float:
        if self.optimizer is None:
            raise RuntimeError("activate() the trainer first")
        batch = draw_batch(self.cache, self.config, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        with offload_context(self.config.memory, self.device):
            loss = flow_matching_loss(self.transformer, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], MAX_GRAD_NORM)
        self.optimizer.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        if self.done:
            self.metrics["eval_loss_after"] = evaluate(
                self.transformer, eval_batches(self.cache, self.config)
            )
        if self.done or self.step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        return value

    def checkpoint(self) -> ExpertCheckpoint:
        if self.optimizer is None:
            raise RuntimeError("activate() the trainer first")
        return ExpertCheckpoint(
            expert=self.expert,
            step=self.step,
            total_steps=self.config.steps,
            lora=lora_state_dict(self.transformer),
            optimizer=self.optimizer.state_dict(),
            rng_state=self.generator.get_state(),
            run_key=self.config.run_key(),
            losses=list(self.losses),
            metrics=dict(self.metrics),
        )

    def save_checkpoint(self) -> None:
        if self.checkpoint_file is not None:
            save_checkpoint(self.checkpoint_file, self.checkpoint())

    def deactivate(self) -> None:
        """Move the expert back to the CPU, drop the optimizer state, undo the memory options."""
        self.optimizer = None
        self.transformer.disable_gradient_checkpointing()
        move_to(self.transformer, "cpu")
        if self._fp8 is not None:
            self._fp8.restore(self.transformer)
            self._fp8 = None
        lora_compute_in_float32(self.transformer)
        release_cached_memory(self.device)


def release_cached_memory(device: torch.device) -> None:
    """Give ``device``'s cached blocks back. ``torch.cuda.empty_cache`` acts on the thread's
    current device, which on the low-noise expert's thread (parallel experts) is cuda:0, not the
    second GPU it trained on: so it runs with ``device`` made current."""
    gc.collect()
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()


def _session_timing(started: float, steps_run: int) -> dict[str, float]:
    """One expert's timing in this session: seconds since `started`, steps run, steps a second."""
    seconds = time.monotonic() - started
    return {
        "seconds": seconds,
        "steps_run": float(steps_run),
        "steps_per_s": steps_run / seconds if seconds > 0 else 0.0,
    }


def train_sequentially(
    trainers: Sequence[ExpertTrainer],
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_finished: Callable[[ExpertTrainer], None] | None = None,
) -> dict[Expert, dict[str, float]]:
    """Train each expert in turn on one device; returns per-expert timing for this session."""
    for trainer in trainers:
        move_to(trainer.transformer, "cpu")
    step_time, steps_run = 0.0, 0
    timing: dict[Expert, dict[str, float]] = {}
    for trainer in trainers:
        if trainer.done:
            continue
        started, first_step = time.monotonic(), trainer.step
        trainer.activate()
        try:
            while not trainer.done:
                if should_cancel is not None and should_cancel():
                    raise TrainingCancelled(f"cancelled at {trainer.expert} step {trainer.step}")
                t0 = time.monotonic()
                loss = trainer.train_step()
                step_time += time.monotonic() - t0
                steps_run += 1
                if on_progress is not None:
                    remaining = sum(t.config.steps - t.step for t in trainers)
                    eta = step_time / steps_run * remaining
                    on_progress(TrainProgress(trainer.expert, trainer.step, trainer.config.steps, loss, eta))
        finally:
            trainer.deactivate()
        timing[trainer.expert] = _session_timing(started, trainer.step - first_step)
        if on_finished is not None:
            on_finished(trainer)
    return timing


def train_in_parallel(
    trainers: Sequence[ExpertTrainer],
    on_progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    on_finished: Callable[[ExpertTrainer], None] | None = None,
) -> dict[Expert, dict[str, float]]:
    """Train the unfinished experts at the same time, each in its own thread on its own device
    (`trainer.device`: two GPUs of one worker). The trainers share nothing but the read-only
    latent cache, so each runs exactly the steps it would run alone; torch releases the GIL in
    its kernels, so the devices work at once. Progress reports are serialised; a cancel, or an
    error in either thread, stops both between steps and is raised here once both have stopped.
    Returns per-expert timing for this session, as `train_sequentially` does."""
    active = [t for t in trainers if not t.done]
    cuda = [t.device for t in active if t.device.type == "cuda"]
    if len(set(cuda)) < len(cuda):
        raise ValueError(f"parallel experts need a device each, got {[str(d) for d in cuda]}")
    for trainer in trainers:
        move_to(trainer.transformer, "cpu")
    stop = threading.Event()
    report = threading.Lock()
    errors: list[BaseException] = []
    timing: dict[Expert, dict[str, float]] = {}

    def run(trainer: ExpertTrainer) -> None:
        started, first_step = time.monotonic(), trainer.step
        try:
            trainer.activate()
            try:
                while not trainer.done and not stop.is_set():
                    if should_cancel is not None and should_cancel():
                        raise TrainingCancelled(f"cancelled at {trainer.expert} step {trainer.step}")
                    loss = trainer.train_step()
                    if on_progress is not None:
                        rate = (time.monotonic() - started) / (trainer.step - first_step)
                        with report:
                            eta = max(rate * (t.config.steps - t.step) for t in active)
                            on_progress(
                                TrainProgress(trainer.expert, trainer.step, trainer.config.steps, loss, eta)
                            )
            finally:
                trainer.deactivate()
            timing[trainer.expert] = _session_timing(started, trainer.step - first_step)
            if trainer.done and on_finished is not None:
                on_finished(trainer)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(t,), name=f"train-{t.expert}") for t in active]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:  # a cancel first: the other thread's stop is its consequence
        raise next((e for e in errors if isinstance(e, TrainingCancelled)), errors[0])
    return timing
