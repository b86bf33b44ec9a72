"""Settings: one `Settings` object, read from `WANFORGE_*` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a wanforge server or worker. Environment: `WANFORGE_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="WANFORGE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("wanforge-data")
    model: str = Field(
        default="demo",
        description="'demo' (tiny random-weight model), a local Wan2.2-I2V-A14B-Diffusers directory, the "
        "official Wan2.2-I2V-A14B directory, a .toml model file naming single files (ComfyUI's, GGUF), or "
        "'random:a14b' (the real sizes with random weights made on the device; docs/engine.md)",
    )

    @field_validator("model")
    @classmethod
    def _model_file_is_usable(cls, value: str) -> str:
        """A model file is read and its paths checked here (no torch), so a typo in it fails at
        start. Only where the file is: an API-only host need not have the workers' files."""
        from wanforge.engine.model_file import is_model_file, read_model_file

        path = Path(value).expanduser()
        if is_model_file(path) and path.is_file():
            read_model_file(path)  # ModelFileError is a ValueError: one line naming the problem
        return value

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite (WAL) in the data directory"
    )
    api_key: str | None = Field(default=None, description="an API key to accept, created at start-up")
    public_url: str | None = Field(
        default=None, description="base URL clients reach this server at (for output URLs)"
    )

    # media
    allow_private_urls: bool = False
    # one size limit per kind of input (docs/media.md): an input image by any route, a training
    # ZIP by any route, one upload
    max_download_bytes: int = 200 * 1024 * 1024
    max_training_data_bytes: int = 2 * 1024 * 1024 * 1024
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024
    # and one time limit per kind of download: an image is small; a training ZIP of up to 2 GiB
    # needs minutes on an ordinary link
    fetch_timeout_s: float = 30.0
    training_data_timeout_s: float = 900.0
    max_image_pixels: int = 40_000_000
    train_memory_limit_gb: float | None = Field(
        default=None,
        gt=0,
        description="device memory (GiB) a training job may use, checked by the memory preflight; "
        "on CUDA the free memory also caps it; unset on the CPU: no check",
    )

    # jobs
    lease_s: float = 30.0
    max_attempts: int = 3
    poll_interval_s: float = 0.5
    sync_mode_timeout_s: float = 600.0
    worker_touch_s: float = Field(
        default=5.0, description="how often an idle or loading worker reports that it is alive"
    )
    store_retry_s: float = Field(
        default=300.0,
        description="how long a worker keeps retrying a locked or unreachable store before it "
        "gives its running job back to the queue (the attempt is not counted)",
    )
    storage_retries: int = Field(
        default=3,
        description="times a job is put back after a storage error (disk full, read-only, I/O "
        "error) before it fails with 5003; these tries do not use up attempts",
    )
    storage_retry_s: float = Field(
        default=30.0,
        description="wait before a job put back after a storage error runs again (doubled each time)",
    )
    stale_tmp_s: float = Field(
        default=3600.0,
        description="a worker removes unfinished storage writes (hidden .tmp files) older than this at start",
    )

    # object storage (issue 9; docs/media.md): unset = the local directory data_dir/files
    storage_url: str | None = Field(
        default=None,
        description="where uploads and outputs live: unset = data_dir/files (a local or shared "
        "directory); 's3://bucket/prefix' = an S3-compatible object store (needs the 's3' extra; "
        "credentials from the standard AWS_* environment variables)",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="the S3 endpoint, for S3-compatible stores (MinIO, Ceph, R2); unset = AWS"
    )
    s3_region: str | None = Field(default=None, description="the S3 region; unset = boto3's default")
    s3_presign_s: int = Field(
        default=3600,
        gt=0,
        le=7 * 24 * 3600,
        description="GET /files/{key} on S3 storage redirects (302) to a presigned URL valid this long",
    )

    @field_validator("storage_url")
    @classmethod
    def _storage_url_is_s3(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("s3://"):
            raise ValueError("WANFORGE_STORAGE_URL must be unset (local directory) or s3://bucket/prefix")
        return value

    # webhooks
    webhook_timeout_s: float = 10.0
    webhook_max_attempts: int = 6
    webhook_retry_base_s: float = 5.0
    webhook_concurrency: int = Field(default=8, ge=1, description="webhook POSTs in flight at once")

    # tenancy and quotas (issue 8): a key's own limits (`wanforge keys create/update --rpm
    # --concurrency`) override these defaults; 0 = unlimited
    default_rpm: int = Field(default=0, ge=0, description="submissions per key per minute (429 above it)")
    default_concurrency: int = Field(
        default=0, ge=0, description="a key's predictions queued or running at once (429 above it)"
    )
    max_queued: int = Field(
        default=1000, ge=0, description="predictions waiting in the server's queue (503/5003 above it)"
    )
    default_max_queued: int = Field(
        default=100, ge=0, description="a key's predictions waiting in the queue (429 above it)"
    )
    default_storage_quota_bytes: int = Field(
        default=10 * 1024**3,
        ge=0,
        description="bytes a key may store: uploads, inputs, outputs (413/429 above)",
    )
    retry_after_s: int = Field(
        default=10, ge=1, description="Retry-After when a running job or the queue must drain first"
    )

    # database connection pools (issue 9; docs/configuration.md "Scaling out"): per process
    db_pool_size: int = Field(default=5, ge=1, description="connections an API process keeps open")
    db_max_overflow: int = Field(
        default=10, ge=0, description="further connections an API process may open under load"
    )
    db_worker_pool_size: int = Field(
        default=2, ge=1, description="connections a worker keeps open (and as many more under load)"
    )
    db_pool_timeout_s: float = Field(
        default=30.0, gt=0, description="wait for a free connection before the request fails"
    )
    db_pool_recycle_s: float = Field(
        default=1800.0, gt=0, description="PostgreSQL connections are reopened after this long"
    )

    # API speed (issue 9; docs/performance.md)
    key_cache_s: float = Field(
        default=1.0,
        ge=0.0,
        le=5.0,
        description="an API process reuses a verified key this long: a revocation, expiry or new "
        "limit takes effect within it (0: the store is read on every request)",
    )
    access_log: bool = Field(
        default=True,
        description="uvicorn's line per request; off: up to 29 % more polls per second "
        "(a load balancer in front logs requests too)",
    )

    # engine
    device: str | None = None
    memory_mode: str | None = Field(
        default=None,
        description="gpu | text_encoder_offload | model_offload | group_offload (unset: the memory plan's)",
    )

    # content safety (docs/safety.md): a detector checks sampled frames of every output video
    content_checker: Literal["opennsfw", "none"] = Field(
        default="opennsfw",
        description="the detector: 'opennsfw' (Yahoo open_nsfw on onnxruntime, bundled) or 'none'",
    )
    nsfw_threshold: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="an output is flagged when a sampled frame scores this or more",
    )
    nsfw_policy: Literal["flag", "block"] = Field(
        default="flag",
        description="'flag': fill has_nsfw_contents; 'block': withhold a flagged output and fail with 1200",
    )
    nsfw_check_input: bool = Field(
        default=False, description="also check the input image (under 'block' a flagged one fails with 1200)"
    )
    nsfw_frames: int = Field(default=8, ge=1, le=64, description="evenly spaced frames checked per video")

    # prompt expansion (docs/safety.md): any OpenAI-compatible chat-completions endpoint
    prompt_expansion_url: str | None = Field(
        default=None, description="base URL up to /v1, e.g. http://127.0.0.1:8080/v1"
    )
    prompt_expansion_model: str | None = None
    prompt_expansion_api_key: SecretStr | None = None
    prompt_expansion_vision: bool = Field(
        default=False, description="the model takes images: the input image is sent along, downscaled"
    )
    prompt_expansion_image_side: int = Field(
        default=512, ge=64, le=2048, description="longest side of the image sent to a vision model"
    )
    prompt_expansion_timeout_s: float = Field(default=30.0, gt=0, description="limit of one request")
    prompt_expansion_retries: int = Field(
        default=2, ge=0, le=5, description="further tries after a timeout, a connection error or a 5xx/429"
    )

    @field_validator("prompt_expansion_url", "prompt_expansion_model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("prompt_expansion_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL up to /v1, e.g. http://127.0.0.1:8080/v1")
        return url

    @property
    def prompt_expansion_configured(self) -> bool:
        return bool(self.prompt_expansion_url and self.prompt_expansion_model)

    # LoRAs for the image-to-video LoRA models (issue 7; docs/api.md "LoRAs")
    lora_dir: Path | None = Field(
        default=None,
        description="directory of operator-provided .safetensors LoRAs that a request may name by "
        "file name; unset: requests can only give URLs",
    )
    max_lora_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024, description="the largest LoRA file accepted, by any route"
    )
    lora_timeout_s: float = Field(
        default=600.0, description="time limit for downloading one LoRA file (up to 2 GiB by default)"
    )
    lora_cache_gb: float = Field(
        default=20.0,
        ge=0,
        allow_inf_nan=False,  # a bound in bytes: inf is no number of them
        description="downloaded LoRA files a worker keeps (in its data dir's loras/), least recently "
        "used removed first; a file used in the last 10 minutes is never removed (so 0 keeps only "
        "those)",
    )

    @property
    def lora_cache_dir(self) -> Path:
        """Downloaded LoRA files, named by their content's sha256."""
        return self.data_dir / "loras"

    # Ultra-fast models (issue 11; docs/api.md "Ultra-fast models"): the step-distilled 4-step
    # schedule runs with the operator's distill LoRAs, one per expert; unset: not served
    ultra_fast_high_noise_lora: Path | None = Field(
        default=None,
        description="the high-noise expert's distill LoRA (.safetensors; LightX2V / Lightning / "
        "any format the LoRA models accept) for the *-ultra-fast models",
    )
    ultra_fast_low_noise_lora: Path | None = Field(
        default=None, description="the low-noise expert's distill LoRA for the *-ultra-fast models"
    )

    @field_validator("ultra_fast_high_noise_lora", "ultra_fast_low_noise_lora", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _ultra_fast_pair(self) -> Settings:
        if (self.ultra_fast_high_noise_lora is None) != (self.ultra_fast_low_noise_lora is None):
            raise ValueError(
                "set both WANFORGE_ULTRA_FAST_HIGH_NOISE_LORA and WANFORGE_ULTRA_FAST_LOW_NOISE_LORA "
                "(one distill LoRA per expert), or neither"
            )
        return self

    # Attention backend (issue 11; docs/performance.md): diffusers' attention_dispatch backend
    attention_backend: Literal["auto", "_flash_3", "sage", "_native_cudnn", "native"] = Field(
        default="auto",
        description="auto: the fastest this GPU can run (FlashAttention 3 on Hopper, SageAttention, "
        "cuDNN SDPA, native SDPA); or one of them by name (the worker fails to start if unavailable)",
    )

    # Memory and speed options of both experts (issue 11; engine/speed.py, docs/engine.md)
    fp8: Literal["off", "storage", "compute", "auto"] = Field(
        default="off",
        description="storage: keep the experts' weights in float8 (e4m3), upcast per layer for compute "
        "(memory only); compute: torchao float8 matmuls for the blocks' linears (CUDA sm89+ with torchao, "
        "else the worker fails to start); auto: compute where it runs, else storage on CUDA, else off",
    )
    step_cache: Literal["off", "first_block"] = Field(
        default="off",
        description="first_block: diffusers' First Block Cache skips the remaining blocks of a step whose "
        "first-block residual barely changed (not exact; see WANFORGE_STEP_CACHE_THRESHOLD)",
    )
    step_cache_threshold: float = Field(
        default=0.05,
        ge=0,
        description="First Block Cache: relative change of the first block's residual below which a step "
        "reuses the cached rest (higher: faster, further from the uncached frames; 0: exact)",
    )

    # --- Regional compile (issue 11; engine/compile.py, docs/engine.md)
    compile: Literal["off", "regional"] = Field(
        default="off",
        description="regional: torch.compile each expert's transformer blocks (diffusers "
        "compile_repeated_blocks); LoRAs are hot-swapped into a fixed slot, so changing them never recompiles",
    )
    compile_max_lora_rank: int = Field(
        default=128,
        ge=0,
        description="under WANFORGE_COMPILE=regional: the rank of each expert's LoRA slot, the most the "
        "LoRAs of one request may use together per layer (0: no slot, LoRAs refused)",
    )
    compile_backend: str = Field(
        default="inductor",
        min_length=1,
        description="the torch.compile backend of WANFORGE_COMPILE=regional (inductor; aot_eager in tests)",
    )
    compile_warmup: str = Field(
        default="480p,720p",
        description="under WANFORGE_COMPILE=regional: the resolutions whose shapes each expert runs once at "
        "worker start, so no request pays for compiling them (comma-separated; empty: none)",
    )

    @field_validator("compile_warmup")
    @classmethod
    def _check_compile_warmup(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in ("480p", "720p", "1080p")]
        if unknown:
            raise ValueError(
                f"unknown resolution {unknown[0]!r}; expected 480p, 720p or 1080p, comma-separated"
            )
        return ",".join(names)

    @property
    def ultra_fast_configured(self) -> bool:
        """Whether the *-ultra-fast models are served (both distill LoRAs are set)."""
        return self.ultra_fast_high_noise_lora is not None and self.ultra_fast_low_noise_lora is not None

    @property
    def worker_stale_s(self) -> float:
        """A worker silent this long counts as gone for /health. A loading or idle worker reports
        every `worker_touch_s`, a busy one with each lease heartbeat (every `lease_s / 3`)."""
        return 2 * max(self.lease_s, 3 * self.worker_touch_s)

    @property
    def own_base_urls(self) -> list[str]:
        """Where this server's own `/files/` URLs live besides the base a request came by: the
        public URL, and the address the API listens on (all interfaces: its loopback), which
        `media.resolve` knows by any spelling, so no Host header makes them someone else's."""
        listen = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        bound = f"http://{'[' + listen + ']' if ':' in listen else listen}:{self.port}"
        return [*([self.public_url] if self.public_url else []), bound]

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'wanforge.db').resolve()}"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    # operations (issue 8; docs/operations.md): retention, metrics, logs
    retention_days: float = Field(
        default=7.0,
        ge=0,
        description="outputs and uploads are deleted this many days after they were made (the hosted "
        "service's window); finished predictions older than this are no longer listed; 0 = keep forever",
    )
    retention_sweep_s: float = Field(
        default=300.0, gt=0, description="how often each API process looks for expired outputs and uploads"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per log line, with the prediction id"
    )

    # --- VAE tiling and the learned upscaler (issue 11; docs/engine.md "VAE decode and upscaling")
    vae_tiling: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="tiled VAE encode/decode (diffusers' AutoencoderKLWan tiling): auto = only above "
        "the 720p area (native 1080p); on; off",
    )
    upscaler: Path | None = Field(
        default=None,
        description="a super-resolution model (.pth/.safetensors, Real-ESRGAN and the like, loaded "
        "with spandrel: the 'upscale' extra) for the 1080p tier; unset: Lanczos",
    )
    upscaler_tile: int = Field(
        default=0,
        ge=0,
        description="the learned upscaler runs on tiles of this many input pixels a side (0: whole "
        "frames); for large models on small GPUs",
    )
    strategy_1080p: Literal["upscale", "native"] | None = Field(
        default=None,
        description="how the 1080p tier is made: 'upscale' denoises at 720p and upscales (Lanczos, "
        "or WANFORGE_UPSCALER); 'native' denoises at 1920x1088 (2.3x the tokens of 720p; VAE tiled "
        "under WANFORGE_VAE_TILING=auto); unset: the model profile's choice (upscale)",
    )

    @field_validator("upscaler", mode="before")
    @classmethod
    def _blank_upscaler_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # --- which jobs a worker takes (issue 9; docs/deployment.md)
    worker_tasks: str = Field(
        default="generate,train",
        pattern=r"^(generate|train)(,(generate|train))*$",
        description="the kinds of job this worker claims, comma-separated: e.g. 'train' for a "
        "two-GPU worker kept for training, 'generate' for the rest",
    )

    # --- LoRA affinity at claim (issue 9; docs/architecture.md#placement)
    affinity_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="a worker takes a queued job using a LoRA it holds loaded before older jobs, "
        "unless the oldest has waited longer than this (then strict FIFO); 0 = affinity off",
    )

    @property
    def retention_s(self) -> float | None:
        """The retention window in seconds; None when everything is kept."""
        return self.retention_days * 86400.0 if self.retention_days > 0 else None

    # --- training memory and speed (issue 11; docs/configuration.md, docs/training.md "Memory and speed")
    train_lora_compute: Literal["base", "float32"] = Field(
        default="base",
        description="'base': the LoRA branch computes in the base's dtype (bf16 on a GPU) with float32 "
        "master weights and optimizer state, keeping no float32 copy of each LoRA'd linear's input; "
        "'float32': peft's own path (input cast to float32)",
    )
    train_fp8_base: bool = Field(
        default=False,
        description="store the frozen base linears of the expert being trained in float8_e4m3fn "
        "(diffusers' layerwise casting), computing in bf16: about half the weights' memory, a "
        "bounded loss difference; needs WANFORGE_TRAIN_LORA_COMPUTE=base",
    )
    train_offload: Literal["none", "activations"] = Field(
        default="none",
        description="'activations': keep the tensors saved for backward in pinned host memory "
        "(exact, costs PCIe transfers)",
    )
    train_gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="'auto': off when the memory preflight's estimate without it fits (faster), on "
        "otherwise and when no device memory is measured (the CPU without a limit)",
    )
    train_frames: int | None = Field(
        default=None,
        ge=5,
        description="frames per training window (4k+1), instead of the model's training profile's",
    )
    train_area: str | None = Field(
        default=None,
        pattern=r"^[0-9]+x[0-9]+$",
        description="training bucket area HEIGHTxWIDTH (multiples of 16), instead of the profile's",
    )
    train_second_device: str = Field(
        default="auto",
        pattern=r"^(auto|off|cpu|cuda(:[0-9]+)?)$",
        description="a second device on which the low-noise expert trains while the high-noise one "
        "trains on the first, both at once: 'auto' = the worker's second visible GPU when it has "
        "two or more; 'off'; or a device such as 'cuda:1'",
    )

    @field_validator("train_frames")
    @classmethod
    def _frames_4k_plus_1(cls, value: int | None) -> int | None:
        if value is not None and (value - 1) % 4:
            raise ValueError(f"WANFORGE_TRAIN_FRAMES must be 4k+1 (5, 9, ..., 81), got {value}")
        return value

    @field_validator("train_area")
    @classmethod
    def _area_multiples_of_16(cls, value: str | None) -> str | None:
        if value is not None and any(int(side) < 16 or int(side) % 16 for side in value.split("x")):
            raise ValueError(f"WANFORGE_TRAIN_AREA sides must be multiples of 16, got {value}")
        return value
