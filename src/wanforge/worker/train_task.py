"""The LoRA trainer task: fetch the ZIP, build the dataset, train both experts, store two files.

The job directory (`{data}/jobs/{prediction id}`) outlives a crash: a re-run of the same job finds
the latent cache and each expert's last checkpoint there and resumes from them. Each checkpoint is
also put in the shared storage as soon as the trainer writes it (`StoredCheckpoints`), so a re-run
on another node (another data directory) resumes from it too; the data ZIP is fetched again from
the job's URL there, and its latents cached again. Those stored checkpoints are the job's scratch:
the worker that records the job's outcome deletes them (`JobContext.scratch_keys`).
"""

from __future__ import annotations

import time

from wanforge.catalog import LoraTrainerInput
from wanforge.engine.loading import LoadedModel, ModelLoadError
from wanforge.media.lora_files import sha256_file
from wanforge.predictions import NAMED_OUTPUTS_KEY
from wanforge.training.checkpoint import StoredCheckpoints
from wanforge.training.dataset import DatasetReport
from wanforge.training.errors import TrainingDataError, TrainingMemoryError
from wanforge.training.job import TrainOptions, lora_stem, train_from_zip
from wanforge.training.preflight import memory_limit_bytes
from wanforge.training.run import TrainParams
from wanforge.training.trainer import TrainingCancelled, TrainProgress
from wanforge.vocabulary import ErrorCode
from wanforge.worker.context import JobContext, TaskError, TaskOutcome, TaskStopped
from wanforge.worker.lease import StopReason


def run_train(ctx: JobContext, loaded: LoadedModel) -> TaskOutcome:
    inp = LoraTrainerInput.model_validate(ctx.prediction.input)
    ctx.job_dir.mkdir(parents=True, exist_ok=True)

    ctx.progress.report("fetching", 0, 1, force=True)
    zip_path = ctx.job_dir / "data.zip"
    if not zip_path.exists():  # a re-run after a crash already has it
        ctx.fetch_to_file(
            inp.data,
            "data",
            zip_path,
            max_bytes=ctx.settings.max_training_data_bytes,
            limit_setting="WANFORGE_MAX_TRAINING_DATA_BYTES",
            timeout_s=ctx.settings.training_data_timeout_s,
            timeout_setting="WANFORGE_TRAINING_DATA_TIMEOUT_S",
        )

    # `train_from_zip` trains in `{job_dir}/train`; its checkpoints are mirrored in storage
    stored = StoredCheckpoints(ctx.storage, ctx.prediction.id, sha256_file(zip_path), ctx.job_dir / "train")
    ctx.scratch_keys.extend(stored.keys)
    for expert, step in stored.pull().items():
        ctx.progress.log(f"resuming {expert} at step {step} from its checkpoint in storage")

    def on_dataset(report: DatasetReport) -> None:
        ctx.remember({"dataset": report.to_dict()})

    def on_progress(p: TrainProgress) -> None:
        # on the training thread, after the step that may have written a checkpoint: its upload
        # (at the profile's `checkpoint_every`) holds the next step back for that long
        # (not once another worker owns the job: its checkpoints are the ones that count now)
        if ctx.lease.reason is not StopReason.LEASE_LOST:
            stored.push_changed(warn=ctx.progress.log)
        ctx.progress.report(
            f"training {p.expert}",
            p.step,
            p.total_steps,
            expert=p.expert,
            loss=round(p.loss, 6),
            eta_s=round(p.eta_s, 1),
        )

    ctx.progress.report("analysing", 0, 1, force=True)
    started = time.monotonic()
    try:
        trained = train_from_zip(
            loaded,
            zip_path,
            ctx.job_dir,
            TrainParams(
                trigger_word=inp.trigger_word,
                steps=inp.steps,
                learning_rate=inp.learning_rate,
                lora_rank=inp.lora_rank,
            ),
            output_stem=f"{lora_stem(inp.trigger_word)}_{ctx.prediction.id[:8]}",
            on_progress=on_progress,
            should_cancel=ctx.lease.should_stop,
            log=lambda line: ctx.progress.log(line),
            on_dataset=on_dataset,
            memory_limit_bytes=memory_limit_bytes(ctx.settings.train_memory_limit_gb),
            options=TrainOptions.from_settings(ctx.settings),
        )
    except TrainingDataError as exc:
        raise TaskError(exc.code, f"invalid parameter data: {exc}") from exc
    except TrainingMemoryError as exc:
        raise TaskError(exc.code, str(exc)) from exc
    except TrainingCancelled as exc:
        raise TaskStopped(str(exc)) from exc
    except ModelLoadError as exc:
        raise TaskError(ErrorCode.TASK_FAILED, str(exc)) from exc

    # outputs: high-noise first, then low-noise, each file named `..._high_noise.safetensors` /
    # `..._low_noise.safetensors`; the result names them too, as the LoRA models' fields take them
    named: dict[str, str] = {}
    for name, path in (
        ("high_noise_lora", trained.result.high_noise_path),
        ("low_noise_lora", trained.result.low_noise_path),
    ):
        named[name] = ctx.storage.new_key("outputs", path.name)
        ctx.storage.put_file(named[name], path)
    return TaskOutcome(
        outputs=list(named.values()),
        result={
            NAMED_OUTPUTS_KEY: named,
            "dataset": trained.report.to_dict(),
            "training": trained.result.metrics,
            "training_s": round(time.monotonic() - started, 1),
        },
    )


def refuse_training(ctx: JobContext, options: list[str]) -> TaskOutcome:
    """The train task of a worker loaded with inference speed options (fp8-stored weights, cached
    blocks skipped): gradients through them would train the wrong model."""
    raise TaskError(
        ErrorCode.UNAVAILABLE,
        f"this worker serves the model with {' and '.join(options)} set, which training cannot use; "
        "run training on a worker without them",
    )
