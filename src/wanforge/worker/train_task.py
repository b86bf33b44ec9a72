"""The LoRA trainer task: fetch the ZIP, build the dataset, train both experts, store two files.

The job directory (`{data}/jobs/{prediction id}`) outlives a crash: a re-run of the same job finds
the latent cache and each expert's last checkpoint there and resumes from them.
"""

from __future__ import annotations

import re
import shutil
import time

from wanforge.catalog import LoraTrainerInput
from wanforge.engine.loading import LoadedModel, ModelLoadError, exclusive_placement
from wanforge.training.archive import ArchiveError
from wanforge.training.dataset import DatasetError, prepare_dataset
from wanforge.training.run import TrainParams, train_lora
from wanforge.training.trainer import TrainingCancelled, TrainProgress
from wanforge.worker.context import JobContext, TaskError, TaskOutcome, TaskStopped


def _file_stem(trigger_word: str, prediction_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", trigger_word).strip("-")[:40] or "lora"
    return f"{safe}_{prediction_id[:8]}"


def run_train(ctx: JobContext, loaded: LoadedModel) -> TaskOutcome:
    inp = LoraTrainerInput.model_validate(ctx.prediction.input)
    profile = loaded.profile
    ctx.job_dir.mkdir(parents=True, exist_ok=True)

    ctx.progress.report("fetching", 0, 1, force=True)
    zip_path = ctx.job_dir / "data.zip"
    if not zip_path.exists():
        data = ctx.read_media(inp.data, "data", max_bytes=ctx.settings.max_upload_bytes)
        partial = zip_path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(zip_path)

    ctx.progress.report("analysing", 0, 1, force=True)
    started = time.monotonic()
    try:
        dataset = prepare_dataset(
            zip_path,
            ctx.job_dir / "dataset",
            trigger_word=inp.trigger_word,
            area=profile.train_area,
            frames_per_window=profile.train_frames,
            log=lambda line: ctx.progress.log(line),
        )
    except (ArchiveError, DatasetError) as exc:
        raise TaskError(1401, f"invalid parameter data: {exc}") from exc
    report = dataset.report.to_dict()
    ctx.remember({"dataset": report})

    def on_progress(p: TrainProgress) -> None:
        ctx.progress.report(
            f"training {p.expert}",
            p.step,
            p.total_steps,
            expert=p.expert,
            loss=round(p.loss, 6),
            eta_s=round(p.eta_s, 1),
        )

    params = TrainParams(
        trigger_word=inp.trigger_word,
        steps=inp.steps,
        learning_rate=inp.learning_rate,
        lora_rank=inp.lora_rank,
        seed=0,
        checkpoint_every=profile.train_checkpoint_every,
        boundary=profile.boundary_ratio,
        shift=profile.flow_shift,
        base_model=loaded.name,
    )
    try:
        with exclusive_placement(loaded):
            trained = train_lora(
                loaded.pipe,
                dataset.samples,
                params,
                ctx.job_dir / "train",
                output_stem=_file_stem(inp.trigger_word, ctx.prediction.id),
                on_progress=on_progress,
                should_cancel=ctx.lease.should_stop,
                device=loaded.device,
                dataset_info={"clips_used": report["clips_used"], "windows": report["windows_total"]},
            )
    except TrainingCancelled as exc:
        raise TaskStopped(str(exc)) from exc
    except ModelLoadError as exc:
        raise TaskError(1403, str(exc)) from exc

    outputs = []
    for path in (trained.high_noise_path, trained.low_noise_path):
        key = ctx.storage.new_key("outputs", path.name)
        ctx.storage.put_file(key, path)
        outputs.append(key)
    shutil.rmtree(ctx.job_dir, ignore_errors=True)
    return TaskOutcome(
        outputs=outputs,
        result={
            "dataset": report,
            "training": trained.metrics,
            "training_s": round(time.monotonic() - started, 1),
        },
    )
