"""The `wanforge` command: serve, worker, workers (Ray), generate, train, plan, keys."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from wanforge.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Self-hosted Wan 2.2 image-to-video.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored hashed).")
app.add_typer(keys_app, name="keys")

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory [env WANFORGE_DATA_DIR; ./wanforge-data]")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="'demo', a local Wan2.2-I2V-A14B-Diffusers directory, the official Wan2.2-I2V-A14B directory, "
        "a .toml model file naming single files, or 'random:a14b' (full size, random weights) "
        "[env WANFORGE_MODEL]",
    ),
]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL [env WANFORGE_DATABASE_URL]")
]


def load_settings(**overrides: Any) -> Settings:
    """Environment first, then any CLI flag that was given. A value that does not fit is one
    line per setting, named as it is set (`WANFORGE_<NAME>`), and exit code 2: no traceback."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if not error["loc"]:  # a check across settings: its message names them; its input is
                lines.append(f"  {message}")  # every setting given, secrets among them
                continue
            name = "WANFORGE_" + "_".join(str(part) for part in error["loc"]).upper()
            got = "" if "got " in message else f" (got {error.get('input')!r})"
            lines.append(f"  {name}: {message}{got}")
        typer.echo("invalid settings:\n" + "\n".join(lines), err=True)
        raise typer.Exit(2) from None


def _open_db(settings: Settings, *, worker: bool = False) -> Any:
    from wanforge.store.db import Database, PoolLimits
    from wanforge.store.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    upgrade(url)
    return Database(url, PoolLimits.from_settings(settings, worker=worker))


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format", help="text | json (one JSON object per line) [env WANFORGE_LOG_FORMAT; text]"
    ),
]


def _value(choice: LogFormat | None) -> str | None:
    return choice.value if choice is not None else None


def _logging(settings: Settings) -> None:
    from wanforge.logs import configure_logging

    configure_logging(settings.log_format)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [env WANFORGE_HOST; 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env WANFORGE_PORT; 8000]")] = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    database_url: DbOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0, help="worker processes to run beside the API, one per GPU when there are several [1]"
        ),
    ] = None,
    no_workers: Annotated[
        bool,
        typer.Option("--no-workers", help="run the API only (one of N API processes; workers run elsewhere)"),
    ] = False,
    log_format: LogFormatOpt = None,
) -> None:
    """Run the API and worker process(es) on the embedded default (SQLite + a local directory).

    With several GPUs each worker process is pinned to its own (CUDA_VISIBLE_DEVICES)."""
    from wanforge.api.app import create_app, run_server
    from wanforge.store.keys import create_key, ensure_key, has_active_key
    from wanforge.store.workers import host_label, mark_process_gone
    from wanforge.worker import gpus
    from wanforge.worker.supervisor import WorkerSupervisor

    if no_workers and workers:
        raise typer.BadParameter(
            "--no-workers and --workers N>0 contradict each other", param_hint="--no-workers"
        )
    count = 0 if no_workers else (1 if workers is None else workers)
    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        model=model,
        database_url=database_url,
        log_format=_value(log_format),
    )
    _logging(settings)
    db = _open_db(settings)
    if settings.api_key:
        ensure_key(db, settings.api_key)
    elif not has_active_key(db):
        plaintext, _ = create_key(db, "created at first start")
        typer.secho(f"\nNew API key (shown once, stored hashed):\n\n    {plaintext}\n", fg="green", bold=True)
    env = {
        "WANFORGE_MODEL": settings.model,
        "WANFORGE_DATA_DIR": str(settings.data_dir),
        "WANFORGE_LOG_FORMAT": settings.log_format,
    }
    host_name = host_label()

    def worker_exited(pid: int, returncode: int) -> None:
        mark_process_gone(db, host_name, pid, f"process exited with {returncode}")

    pinned = gpus.worker_gpus(gpus.visible_gpus(os.environ), count) if count else []
    supervisors = [
        WorkerSupervisor(
            data_dir=settings.data_dir,
            database_url=settings.resolved_database_url(),
            env=env if gpu is None else {**env, gpus.VISIBLE_ENV: gpu},
            on_exit=worker_exited,
        )
        for gpu in pinned
    ]

    def stop_workers() -> None:
        for sup in supervisors:
            sup.stop()

    # uvicorn re-raises SIGTERM/SIGINT after its shutdown, which skips `finally` blocks: stop the
    # workers in the app's shutdown instead (and the workers exit by themselves if this process dies)
    app_ = create_app(settings, db, on_shutdown=[stop_workers])
    for sup in supervisors:
        sup.start()
    typer.echo(f"wanforge serving model '{settings.model}' on http://{settings.host}:{settings.port}")
    try:
        run_server(app_, settings)
    finally:
        stop_workers()


@app.command()
def worker(
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    model: ModelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run one worker process: load the model, then claim and run jobs from the store."""
    from wanforge.worker.loop import WorkerLoop
    from wanforge.worker.supervisor import PARENT_ENV

    settings = load_settings(
        data_dir=data_dir, database_url=database_url, model=model, log_format=_value(log_format)
    )
    _logging(settings)
    loop = WorkerLoop(settings, _open_db(settings, worker=True))
    loop.install_signal_handlers()
    if parent := os.environ.get(PARENT_ENV):
        loop.watch_parent(int(parent))
    loop.run_forever()


RAY_MISSING = "ray is not installed: pip install 'wanforge[ray]' (Ray 2.40 or later)"


def _ray_error(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


def _reachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why `HOST:PORT` cannot be reached, or None. Checked before `ray.init`, which would retry
    for a minute or more before failing."""
    import socket

    if address == "auto":  # on a node of the cluster: Ray finds it
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"--ray: expected HOST:PORT of the head node's GCS (ray start --head --port), got {address!r}"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"--ray: cannot reach the Ray cluster at {address}: {exc.strerror or exc}"


@app.command()
def workers(
    ray_address: Annotated[
        str,
        typer.Option(
            "--ray",
            metavar="HOST:PORT",
            help="the Ray head node's GCS address (ray start --head --port), or auto",
        ),
    ],
    count: Annotated[
        int | None,
        typer.Option(min=1, help="worker actors to start (default: one per GPU the cluster reports)"),
    ] = None,
    cpus_per_worker: Annotated[
        float | None,
        typer.Option("--cpus-per-worker", help="CPU-only workers with this many CPUs each (no GPU)"),
    ] = None,
    resources: Annotated[
        str | None,
        typer.Option(help="custom Ray resources each actor asks for, as JSON: '{\"gpu_node\": 1}'"),
    ] = None,
    max_restarts: Annotated[
        int, typer.Option("--max-restarts", min=-1, help="restarts Ray makes of each actor (-1: no bound)")
    ] = 5,
    gpus_per_worker: Annotated[
        int,
        typer.Option(
            "--gpus-per-worker",
            min=1,
            help="GPUs each actor gets; 2: training runs both experts at once (WANFORGE_TRAIN_SECOND_DEVICE)",
        ),
    ] = 1,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
    model: ModelOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run worker actors on a Ray cluster (one per GPU), each claiming jobs from the store.

    Every node needs wanforge installed, the store (PostgreSQL, or SQLite on one machine) and
    the storage (S3, or the data directory on a shared path) reachable. Stays up watching the
    actors; SIGTERM or Ctrl-C stops them, each releasing its running job."""
    import signal
    import threading

    try:
        from wanforge.cluster.supervisor import RayWorkers, cluster_resources, connect, disconnect
    except ModuleNotFoundError as exc:
        if exc.name != "ray" and not (exc.name or "").startswith("ray."):
            raise
        raise _ray_error(RAY_MISSING) from None
    from wanforge.cluster.placement import PlacementError, parse_resources, plan

    settings = load_settings(
        data_dir=data_dir, database_url=database_url, model=model, log_format=_value(log_format)
    )
    _logging(settings)
    if problem := _reachable(ray_address):
        raise _ray_error(problem)
    _open_db(settings, worker=True).dispose()  # migrated once here, before any actor starts
    try:
        connect(ray_address)
    except (ConnectionError, RuntimeError) as exc:
        raise _ray_error(f"--ray: cannot join the Ray cluster at {ray_address}: {exc}") from None
    try:
        placement = plan(
            cluster_resources(),
            count=count,
            cpus_per_worker=cpus_per_worker,
            max_restarts=max_restarts,
            resources=parse_resources(resources),
            gpus_per_worker=gpus_per_worker,
        )
    except PlacementError as exc:
        disconnect()
        raise _ray_error(str(exc)) from None
    cluster = RayWorkers(settings, placement)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        typer.echo(f"signal {signum}: stopping the worker actors", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    cluster.start()
    try:
        code = cluster.watch(stop)
    finally:
        cluster.stop(timeout_s=settings.lease_s + 10)
        disconnect()
    raise typer.Exit(code)


MAX_CLI_LORAS = 3
LORA_ARG = "PATH[:SCALE]"


def parse_lora(value: str, option: str) -> tuple[Path, float]:
    """`style.safetensors:0.8` -> (path, 0.8); no `:SCALE` -> scale 1.0. A path that itself
    contains `:` is taken whole when the text after the last `:` is not a number."""
    path, scale = value, 1.0
    head, sep, tail = value.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
            path = head
        except ValueError:
            if not Path(value).exists():
                raise typer.BadParameter(
                    f"{value!r}: SCALE after ':' must be a number in 0..4", param_hint=option
                ) from None
    if not 0.0 <= scale <= 4.0:
        raise typer.BadParameter(f"{value!r}: SCALE must be in 0..4, got {scale:g}", param_hint=option)
    return Path(path), scale


def cli_loras(groups: list[tuple[str, list[str] | None, frozenset[Any]]], max_bytes: int) -> tuple[Any, ...]:
    """Each `--lora` / `--high-noise-lora` / `--low-noise-lora` to a checked LoraRequest."""
    from wanforge.engine.loras import LoraRequest
    from wanforge.media.lora_files import LoraFileError, check_safetensors, lora_source, sha256_file

    requests = []
    for option, values, experts in groups:
        if len(values or []) > MAX_CLI_LORAS:
            raise typer.BadParameter(f"at most {MAX_CLI_LORAS} may be given", param_hint=option)
        for value in values or []:
            path, scale = parse_lora(value, option)
            try:
                lora_source(path.name)  # the name rules, pickles refused with the convert hint
                if not path.is_file():
                    raise LoraFileError("no such file")
                size = path.stat().st_size
                if size > max_bytes:
                    raise LoraFileError(f"{size} bytes is over the limit (WANFORGE_MAX_LORA_BYTES)")
                check_safetensors(path, size)
            except LoraFileError as exc:
                raise typer.BadParameter(f"{str(path)!r}: {exc}", param_hint=option) from exc
            requests.append(LoraRequest(path, sha256_file(path), scale, experts, path.name))
    return tuple(requests)


@app.command()
def generate(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="input image")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="what should happen")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output .mp4")] = Path("out.mp4"),
    resolution: Annotated[str, typer.Option(help="480p | 720p | 1080p")] = "720p",
    seed: Annotated[int, typer.Option(help="-1 = random")] = -1,
    negative_prompt: Annotated[str, typer.Option("--negative-prompt")] = "",
    model: ModelOpt = None,
    duration: Annotated[int, typer.Option(help="seconds: 5 (81 frames) or 8 (129 frames)")] = 5,
    last_image: Annotated[
        Path | None,
        typer.Option("--last-image", exists=True, dir_okay=False, help="the video's last frame"),
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", metavar=LORA_ARG, help="a LoRA for both experts (repeatable, up to 3)"),
    ] = None,
    high_noise_lora: Annotated[
        list[str] | None,
        typer.Option("--high-noise-lora", metavar=LORA_ARG, help="a LoRA for the high-noise expert only"),
    ] = None,
    low_noise_lora: Annotated[
        list[str] | None,
        typer.Option("--low-noise-lora", metavar=LORA_ARG, help="a LoRA for the low-noise expert only"),
    ] = None,
) -> None:
    """Make one video from the command line, without a server.

    LoRAs are local .safetensors files, `PATH` or `PATH:SCALE` (scale 0..4, default 1)."""
    from rich.progress import Progress

    from wanforge.engine.generate import GenerationRequest, resolve_seed
    from wanforge.engine.loras import BOTH
    from wanforge.engine.video import write_mp4
    from wanforge.media.images import decode_image
    from wanforge.worker.tasks import build_engine

    if resolution not in ("480p", "720p", "1080p"):
        raise typer.BadParameter("must be 480p, 720p or 1080p", param_hint="--resolution")
    if not -1 <= seed <= 2147483647:
        raise typer.BadParameter("must be -1 or 0..2147483647", param_hint="--seed")
    if duration not in (5, 8):
        raise typer.BadParameter("must be 5 or 8", param_hint="--duration")
    settings = load_settings(model=model)
    loras = cli_loras(
        [
            ("--lora", lora, BOTH),
            ("--high-noise-lora", high_noise_lora, frozenset({"high_noise"})),
            ("--low-noise-lora", low_noise_lora, frozenset({"low_noise"})),
        ],
        settings.max_lora_bytes,
    )
    img = decode_image(image.read_bytes(), max_pixels=settings.max_image_pixels)
    last = decode_image(last_image.read_bytes(), max_pixels=settings.max_image_pixels) if last_image else None
    with Progress() as progress:
        task = progress.add_task(f"loading {settings.model}", total=None)
        engine = build_engine(settings)
        used_seed = resolve_seed(seed)
        progress.update(task, description=f"denoising (seed {used_seed})")
        result = engine.generate(
            GenerationRequest(
                image=img,
                prompt=prompt,
                negative_prompt=negative_prompt,
                resolution=resolution,
                seed=used_seed,
                duration_s=duration,
                loras=loras,
                last_image=last,
            ),
            on_step=lambda i, n: progress.update(task, completed=i, total=n),
        )
        progress.update(task, description="encoding")
        write_mp4(result.frames, out, result.fps)
    for note in result.notes:  # what a partly matching LoRA file left out
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"{out}: {result.width}x{result.height}, {result.frames.shape[0]} frames, seed {used_seed}")


@app.command()
def train(
    data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="ZIP of videos + same-name .txt captions")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory for the two LoRAs")] = Path(
        "lora-out"
    ),
    trigger_word: Annotated[str, typer.Option("--trigger-word")] = "p3r5on",
    steps: Annotated[int, typer.Option(min=50, max=1500, help="optimizer steps per expert")] = 100,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=0.0, max=1.0)] = 0.0002,
    lora_rank: Annotated[int, typer.Option("--lora-rank", min=1, max=128)] = 32,
    model: ModelOpt = None,
) -> None:
    """Train the two Wan 2.2 I2V LoRAs (high-noise and low-noise expert) without a server.

    Re-running with the same --out resumes from the last checkpoint.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from wanforge.training.errors import TrainingDataError, TrainingMemoryError
    from wanforge.training.job import TrainOptions, lora_stem, train_from_zip
    from wanforge.training.preflight import memory_limit_bytes
    from wanforge.training.run import TrainParams
    from wanforge.training.trainer import TrainProgress
    from wanforge.worker.tasks import load_model

    settings = load_settings(model=model)
    loaded = load_model(settings)
    work = out / ".wanforge-train"
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        bars = {
            expert: progress.add_task(f"{expert} expert", total=steps, loss="")
            for expert in ("high_noise", "low_noise")
        }

        def on_progress(p: TrainProgress) -> None:
            progress.update(bars[p.expert], completed=p.step, loss=f"loss {p.loss:.4f}")

        try:
            trained = train_from_zip(
                loaded,
                data,
                work,
                TrainParams(trigger_word, steps, learning_rate, lora_rank),
                output_stem=lora_stem(trigger_word),
                on_progress=on_progress,
                log=lambda line: progress.console.print(f"  {line}"),
                memory_limit_bytes=memory_limit_bytes(settings.train_memory_limit_gb),
                options=TrainOptions.from_settings(settings),
            )
        except (TrainingDataError, TrainingMemoryError) as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from exc
    report = trained.report
    typer.echo(
        f"dataset: {report.clips_used} clips, {report.windows_total} windows, buckets {report.buckets}"
    )
    out.mkdir(parents=True, exist_ok=True)
    for path in (trained.result.high_noise_path, trained.result.low_noise_path):
        target = out / path.name
        path.replace(target)
        typer.echo(str(target))
    shutil.rmtree(work, ignore_errors=True)


GPU_HELP = "h100-80gb | h200-141gb | a100-80gb | l40s-48gb | rtx4090-24gb | <N>gb"


def parse_capability(value: str | None) -> tuple[int, int] | None:
    """`--capability 8.9` -> (8, 9)."""
    if value is None:
        return None
    match = re.fullmatch(r"([0-9]+)\.([0-9])", value.strip())
    if not match:
        raise typer.BadParameter(
            f"expected MAJOR.MINOR such as 8.9, got {value!r}", param_hint="--capability"
        )
    return int(match[1]), int(match[2])


@app.command()
def plan(
    gpu: Annotated[str, typer.Option("--gpu", help=GPU_HELP)],
    resolution: Annotated[str, typer.Option(help="480p | 720p | 1080p (native: 1920x1088)")] = "720p",
    train: Annotated[bool, typer.Option("--train", help="plan a LoRA training job instead")] = False,
    frames: Annotated[
        int | None,
        typer.Option(help="frames, 4k+1 [generation: 81; training: WANFORGE_TRAIN_FRAMES, else 33]"),
    ] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank (training)")] = 32,
    capability: Annotated[
        str | None, typer.Option(help="compute capability of a <N>gb card, such as 8.9 [8.0]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON")] = False,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="also run the full-size simulation (seconds to a minute)")
    ] = False,
) -> None:
    """The memory plan a worker with this environment's settings takes on a card: memory mode,
    FP8, attention, compile, what stays on the GPU, the predicted peak (formulas calibrated
    against the full-size simulation), whether it fits and what to change when it does not.
    Exit code 1 when it does not fit. Builds no model."""
    import json
    import logging

    from wanforge.engine import plan as planning

    try:
        card = planning.card_from_name(gpu, parse_capability(capability))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gpu") from None
    if resolution not in planning.SIZES:
        raise typer.BadParameter("must be 480p, 720p or 1080p", param_hint="--resolution")
    if frames is not None and (frames < 5 or (frames - 1) % 4):
        raise typer.BadParameter(f"must be 4k+1 and at least 5, got {frames}", param_hint="--frames")
    if rank < 1:
        raise typer.BadParameter(f"must be at least 1, got {rank}", param_hint="--rank")
    settings = load_settings()
    sizes = planning.ModelSizes.A14B
    try:
        if train:
            for noisy in ("torchao", "torch.utils._pytree", "transformers"):  # import-time chatter
                logging.getLogger(noisy).setLevel(logging.ERROR)
            from wanforge.training import plan as training_plan

            request = training_plan.training_request_from_settings(settings, frames=frames, rank=rank)
            result = training_plan.plan_training(
                card, sizes, request, planning.options_from_settings(settings)
            )
        else:
            options = planning.options_from_settings(settings)
            result = planning.plan_generation(
                card, sizes, options, resolution, frames or planning.DEFAULT_FRAMES
            )
    except ValueError as exc:  # a setting that cannot run on this card
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    simulated = _simulated_peaks(result) if simulate else None
    if as_json:
        out = {"gpu": {"name": card.name, "total_bytes": card.total_bytes, "free_bytes": card.free_bytes,
                        "capability": card.capability}, **result.as_dict()}  # fmt: skip
        if simulated is not None:
            out["simulated"] = simulated
        typer.echo(json.dumps(out, indent=2))
    else:
        typer.echo(_describe_plan(card, result, simulated))
    if not result.fits:
        raise typer.Exit(1)


def _simulated_peaks(result: Any) -> dict[str, float]:
    """GiB from the full-size simulation of the plan's work (FakeTensorMode on the CPU)."""
    from wanforge.engine import simulate
    from wanforge.training.memory import MemoryOptions

    gib = 2**30
    if result.task == "train":
        memory = MemoryOptions(fp8_base=result.fp8 == "storage")
        from wanforge.training.simulate import simulate_training_step

        step = simulate_training_step(
            result.frames, width=result.width, height=result.height, rank=result.rank,
            gradient_checkpointing=bool(result.gradient_checkpointing), memory=memory,
        )  # fmt: skip
        return {"training_step_peak_gib": step.peak_bytes / gib}
    w, h, f = result.width, result.height, result.frames
    forward = simulate.simulate_forward(w, h, f, num_layers=2)  # its peak does not depend on depth
    decode = simulate.simulate_vae_decode(w, h, f, tiled=result.vae_tiled)
    return {
        "expert_forward_activations_gib": forward.activation_bytes / gib,
        "vae_decode_activations_gib": decode.activation_bytes / gib,
    }


def _describe_plan(card: Any, result: Any, simulated: dict[str, float] | None) -> str:
    gib = 2**30
    sm = f"sm{card.capability[0]}{card.capability[1]}" if card.capability else "no CUDA"
    what = (
        f"a training step, {result.frames}-frame {result.height}x{result.width} windows, LoRA rank {result.rank}"
        if result.task == "train"
        else f"{result.width}x{result.height}, {result.frames} frames"
    )
    resident = ", ".join(result.resident) or "one model at a time"
    lines = [
        f"plan for {card.name} ({card.total_bytes / gib:.1f} GiB, {sm}): {what}",
        f"  memory mode      {result.memory_mode} (on the GPU: {resident})",
        f"  fp8              {result.fp8}",
        f"  attention        {result.attention} (training: {result.training_attention})",
        f"  compile          {result.compile}",
    ]
    if result.task == "train":
        lines.append(f"  checkpointing    {'on' if result.gradient_checkpointing else 'off'}")
    else:
        lines.append(f"  VAE              {'tiled' if result.vae_tiled else 'untiled'}")
    lines.append(
        f"  predicted peak   {result.peak_bytes / gib:.1f} GiB (weights {result.weights_bytes / gib:.1f}, "
        f"activations {result.activation_bytes / gib:.1f}; formulas calibrated against the simulation) "
        f"of {result.available_bytes / gib:.1f} GiB available: {'fits' if result.fits else 'does not fit'}"
    )
    for name, value in (simulated or {}).items():
        lines.append(f"  simulated        {name.removesuffix('_gib').replace('_', ' ')} {value:.1f} GiB")
    lines.extend(f"  note             {note}" for note in result.notes)
    lines.extend(f"  to fit           {advice}" for advice in result.advice)
    return "\n".join(lines)


def parse_expiry(value: str, now: datetime) -> datetime | None:
    """`--expires`: `never`, a duration from now (`30d`, `12h`, `90m`) or an ISO 8601 date or
    time (taken as UTC when it has no offset); naive UTC, as the store keeps times."""
    text = value.strip().lower()
    if text == "never":
        return None
    if match := re.fullmatch(r"(\d+)([dhm])", text):
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2]]
        return now + timedelta(**{unit: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            "expected never, a duration such as 30d, 12h or 90m, or an ISO 8601 date or time",
            param_hint="--expires",
        ) from None
    return parsed if parsed.tzinfo is None else parsed.astimezone(UTC).replace(tzinfo=None)


def parse_limit(value: str, hint: str) -> int | None:
    """A key's limit for `keys update`: a number (0 = unlimited) or `default` (the server's)."""
    if value.strip().lower() == "default":
        return None
    if value.strip().isdigit():
        return int(value)
    raise typer.BadParameter("expected a number (0 = unlimited) or 'default'", param_hint=hint)


RpmOpt = Annotated[
    int | None,
    typer.Option("--rpm", min=0, help="submissions per minute; 0 = unlimited [WANFORGE_DEFAULT_RPM]"),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=0,
        help="predictions queued or running at once; 0 = unlimited [WANFORGE_DEFAULT_CONCURRENCY]",
    ),
]
MaxQueuedOpt = Annotated[
    int | None,
    typer.Option(
        "--max-queued",
        min=0,
        help="predictions waiting in the queue at once; 0 = unlimited [WANFORGE_DEFAULT_MAX_QUEUED]",
    ),
]
WeightOpt = Annotated[
    str | None,
    typer.Option(
        "--weight", help="share of the workers against other keys' (1 = even; 2 = twice as many turns)"
    ),
]


def parse_weight(value: str) -> float:
    """A key's weight for `keys create/update`: a number above 0 (store/keys.py: check_weight)."""
    from wanforge.store.keys import check_weight

    try:
        weight = float(value)
        check_weight(weight)
    except ValueError as exc:
        raise typer.BadParameter(
            str(exc) if "weight" in str(exc) else "expected a number", param_hint="--weight"
        ) from None
    return weight


StorageQuotaOpt = Annotated[
    str | None,
    typer.Option(
        "--storage-quota",
        help="bytes it may store (uploads, inputs, outputs), e.g. 500MiB, 20GiB; 0 = unlimited; 'default' "
        "[WANFORGE_DEFAULT_STORAGE_QUOTA_BYTES]",
    ),
]
_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(value: str, hint: str) -> int | None:
    """A byte count for `keys create/update`: digits with an optional K, M, G or T (binary:
    `20GiB`, `20G`), 0 = unlimited, or `default` (None: the server's)."""
    text = value.strip().lower()
    if text == "default":
        return None
    if match := re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b)?", text):
        return int(match[1]) * _BYTE_UNITS[match[2]]
    raise typer.BadParameter(
        "expected a number of bytes, e.g. 500MiB or 20GiB (0 = unlimited), or 'default'", param_hint=hint
    )


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


ExpiresOpt = Annotated[
    str | None,
    typer.Option("--expires", help="never | a duration (30d, 12h, 90m) | an ISO 8601 date or time (UTC)"),
]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="a label")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="sees and manages every key's predictions")] = False,
    rpm: RpmOpt = None,
    concurrency: ConcurrencyOpt = None,
    max_queued: MaxQueuedOpt = None,
    weight: WeightOpt = None,
    storage_quota: StorageQuotaOpt = None,
    expires: ExpiresOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Create a key and print it (once). Limits not given are the server's defaults."""
    from wanforge.store.db import utcnow
    from wanforge.store.keys import KeyOptions, create_key

    options = KeyOptions(
        is_admin=admin,
        rpm=rpm,
        concurrency=concurrency,
        expires_at=parse_expiry(expires, utcnow()) if expires is not None else None,
        max_queued=max_queued,
        weight=parse_weight(weight) if weight is not None else 1.0,
        storage_quota=parse_bytes(storage_quota, "--storage-quota") if storage_quota is not None else None,
    )
    db = _open_db(load_settings(data_dir=data_dir, database_url=database_url))
    plaintext, row = create_key(db, name, options)
    typer.echo(plaintext)
    typer.echo(f"id {row.id}", err=True)


@keys_app.command("update")
def keys_update(
    key_id: Annotated[str, typer.Argument(help="key id, or the start of the key")],
    rpm: Annotated[
        str | None, typer.Option("--rpm", help="submissions per minute; 0 = unlimited; 'default'")
    ] = None,
    concurrency: Annotated[
        str | None, typer.Option("--concurrency", help="jobs at once; 0 = unlimited; 'default'")
    ] = None,
    max_queued: Annotated[
        str | None, typer.Option("--max-queued", help="jobs waiting at once; 0 = unlimited; 'default'")
    ] = None,
    weight: WeightOpt = None,
    storage_quota: StorageQuotaOpt = None,
    expires: ExpiresOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Change a key's limits, weight or expiry; what is not given stays. Holds from the next request
    (the weight from the next job a worker takes)."""
    from wanforge.store.db import utcnow
    from wanforge.store.keys import UNCHANGED, update_key

    changes: dict[str, Any] = {
        "rpm": parse_limit(rpm, "--rpm") if rpm is not None else UNCHANGED,
        "concurrency": parse_limit(concurrency, "--concurrency") if concurrency is not None else UNCHANGED,
        "expires_at": parse_expiry(expires, utcnow()) if expires is not None else UNCHANGED,
        "max_queued": parse_limit(max_queued, "--max-queued") if max_queued is not None else UNCHANGED,
        "weight": parse_weight(weight) if weight is not None else UNCHANGED,
        "storage_quota": parse_bytes(storage_quota, "--storage-quota")
        if storage_quota is not None
        else UNCHANGED,
    }
    rows = update_key(
        _open_db(load_settings(data_dir=data_dir, database_url=database_url)), key_id, **changes
    )
    if len(rows) != 1:
        typer.secho(f"{len(rows)} active keys match {key_id!r}; nothing changed", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"updated {rows[0].id} ({rows[0].prefix}…)")


def _limit(value: int | None) -> str:
    return "default" if value is None else ("unlimited" if value == 0 else str(value))


@keys_app.command("list")
def keys_list(data_dir: DataDirOpt = None, database_url: DbOpt = None) -> None:
    """List keys (prefix only; keys are stored hashed), with their role, limits, expiry and the
    bytes each stores against its storage quota."""
    from wanforge.store.db import utcnow
    from wanforge.store.keys import list_keys
    from wanforge.store.storage_quota import stored_bytes

    now = utcnow()
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    db = _open_db(settings)
    for row in list_keys(db):
        if row.revoked_at:
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}"
        elif row.expires_at and row.expires_at <= now:
            state = f"expired {row.expires_at:%Y-%m-%d %H:%M}"
        elif row.expires_at:
            state = f"expires {row.expires_at:%Y-%m-%d %H:%M}"
        else:
            state = "active"
        role = "admin" if row.is_admin else "key"
        limits = (
            f"rpm {_limit(row.rpm)}, concurrency {_limit(row.concurrency)}, "
            f"weight {row.weight:g}, queue {_limit(row.max_queued)}"
        )
        quota = settings.default_storage_quota_bytes if row.storage_quota is None else row.storage_quota
        with db.session() as s:
            limits += (
                f", storage {_bytes(stored_bytes(s, row.id))} of {_bytes(quota) if quota else 'unlimited'}"
            )
        typer.echo(
            f"{row.id}  {row.prefix}…  {role:<5}  {state:<24}  {limits}  "
            f"{row.created_at:%Y-%m-%d %H:%M}  {row.name}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="key id, or the start of the key")],
    data_dir: DataDirOpt = None,
    database_url: DbOpt = None,
) -> None:
    """Revoke a key by id or prefix."""
    from wanforge.store.keys import revoke_key

    rows = revoke_key(_open_db(load_settings(data_dir=data_dir, database_url=database_url)), key_id)
    if len(rows) != 1:
        typer.secho(f"{len(rows)} active keys match {key_id!r}; nothing revoked", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {rows[0].id} ({rows[0].prefix}…)")
