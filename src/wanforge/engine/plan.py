"""The memory plan: from the card, the model's sizes and the settings, the whole decision of how a
worker holds the model, in one pure function.

:func:`plan_generation` decides, in this order: the FP8 mode (``auto``: torchao float8 compute
where the card runs it and a bf16 expert can be moved onto it to be converted; else fp8 storage
only where it lets more of the model stay resident; else off), then the memory mode with the
experts at that size (the first of :data:`PREFERENCE` whose predicted peak fits), the attention
backend for serving and one for training (never ``sage``: its kernel has no backward; never
``_flash_3``: diffusers' op has no autograd), regional compile, and what stays on the device. It
returns a frozen :class:`Plan` with the predicted peak, whether it fits, and what to change when
it does not. :func:`plan_training` does the same for a LoRA training job (one expert on the
device, the trainer's preflight estimate).

The predicted activations are formulas calibrated against the full-size simulation of the real
modules (:mod:`wanforge.engine.simulate`: FakeTensorMode on the CPU); ``tests/engine/test_plan.py``
holds each within 10% of the simulation. They are simulated figures, not GPU measurements: the
simulation counts live tensor bytes (what ``torch.cuda.max_memory_allocated`` reports), so
:data:`ALLOCATOR_MARGIN_BYTES` is kept free for the CUDA allocator's rounding and fragmentation,
cuBLAS/cuDNN workspaces and the kernels' own scratch (an allowance, not a measurement).

Nothing here imports torch: the CLI answers ``wanforge plan`` from :data:`ModelSizes.A14B`
without building a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal, get_args

GIB = 1024**3
MemoryMode = Literal["gpu", "text_encoder_offload", "model_offload", "group_offload"]
# the modes in the order a plan prefers them: more of the model resident is less host<->device traffic
PREFERENCE: tuple[MemoryMode, ...] = get_args(MemoryMode)
Fp8Mode = Literal["off", "storage", "compute"]
AttentionBackend = Literal["_flash_3", "sage", "_native_cudnn", "native"]
ATTENTION_PREFERENCE: tuple[AttentionBackend, ...] = get_args(AttentionBackend)
# backends with a backward pass, for LoRA training (engine.attention uses these lists too)
TRAINABLE: tuple[AttentionBackend, ...] = ("_native_cudnn", "native")
CompileMode = Literal["off", "regional"]
# torchao's float8 kernels (torch._scaled_mm) need sm89+
FP8_COMPUTE_CAPABILITY = (8, 9)
# kept free beyond the predicted peak (see the module docstring); the trainer's preflight keeps
# the same 2 GiB (training.preflight.CUDA_OVERHEAD_BYTES)
ALLOCATOR_MARGIN_BYTES = 2 * GIB
# what the CUDA context takes from a card's total before the worker loads anything (an assumed
# figure for the presets; a worker reads its real free memory with torch.cuda.mem_get_info)
CUDA_CONTEXT_BYTES = GIB // 2

# --- activation formulas, calibrated against wanforge.engine.simulate (see docs/engine.md) -----
# One expert forward (no grad), per token: two float32 tensors of width dim (the residual stream
# and a norm's float32 input) and, in the compute dtype, two of width dim and two of width ffn_dim
# (the FFN hidden before and after the GELU). Simulated: 113.7 KB per A14B token at every size.
FORWARD_FP32_DIM_TENSORS = 2
FORWARD_DIM_TENSORS = 2
FORWARD_FFN_TENSORS = 2
# The VAE decode, float32, untiled: per output pixel of a frame, the decoder's full-resolution
# stage (96 channels x 4 frames per latent frame in float32, ~12 such tensors live at once:
# simulated 18.2 KB), plus per pixel per frame the decoded video held while it is assembled
# (simulated 28 bytes). Tiled (diffusers' 256-pixel tiles every 192): a tile's working set plus
# the decoded tiles and rows, ~53 bytes per pixel per frame (simulated at 720p and 1080p).
DECODE_BYTES_PER_PIXEL = 18_432
DECODE_BYTES_PER_PIXEL_FRAME = 28
TILED_DECODE_BYTES = 246 * 2**20
TILED_DECODE_BYTES_PER_PIXEL_FRAME = 53
# the engine tiles the VAE above the 720p area under WANFORGE_VAE_TILING=auto (engine.vae)
AUTO_TILING_AREA = 1280 * 720
# generation sizes (width, height) the engine denoises at for each preset (16:9; native 1080p
# denoises at 1920x1088)
SIZES: dict[str, tuple[int, int]] = {"480p": (832, 480), "720p": (1280, 720), "1080p": (1920, 1088)}
# the longest video a served model makes: 8 s at 16 fps (the LoRA models' duration 8)
MAX_FRAMES = 129
DEFAULT_FRAMES = 81


@dataclass(frozen=True)
class Card:
    """A GPU as the plan sees it: its memory, compute capability and attention libraries."""

    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int] | None  # None: no CUDA (the CPU)
    cudnn: bool = True
    flash_attn_3: bool = False
    sageattention: bool = False
    torchao: bool = True

    @property
    def cuda(self) -> bool:
        return self.capability is not None

    @property
    def fp8_compute(self) -> bool:
        return self.cuda and self.torchao and (self.capability or (0, 0)) >= FP8_COMPUTE_CAPABILITY

    def attention_backends(self) -> list[AttentionBackend]:
        """The backends this card runs, fastest first (engine.attention.available_backends' rule)."""
        sm = self.capability or (0, 0)
        usable = {
            "_flash_3": self.cuda and sm[0] == 9 and self.flash_attn_3,
            "sage": self.cuda and sm >= (8, 0) and self.sageattention,
            "_native_cudnn": self.cuda and sm >= (8, 0) and self.cudnn,
            "native": True,
        }
        return [name for name in ATTENTION_PREFERENCE if usable[name]]


def _preset(name: str, total_mib: int, capability: tuple[int, int]) -> Card:
    total = total_mib * 2**20
    return Card(name, total, total - CUDA_CONTEXT_BYTES, capability)


# totals as nvidia-smi reports them (MiB); free = total less an assumed 0.5 GiB CUDA context
CARDS: Mapping[str, Card] = {
    card.name: card
    for card in (
        _preset("h100-80gb", 81_559, (9, 0)),
        _preset("h200-141gb", 143_771, (9, 0)),
        _preset("a100-80gb", 81_920, (8, 0)),
        _preset("l40s-48gb", 46_068, (8, 9)),
        _preset("rtx4090-24gb", 24_564, (8, 9)),
    )
}
GENERIC_CAPABILITY = (8, 0)


def card_from_name(name: str, capability: tuple[int, int] | None = None) -> Card:
    """A preset of :data:`CARDS`, or ``"<N>gb"``: a card of N GiB (sm80 unless ``capability``)."""
    key = name.strip().lower()
    if key in CARDS:
        card = CARDS[key]
        return card if capability is None else replace(card, capability=capability)
    if key.endswith("gb") and key[:-2].replace(".", "", 1).isdigit() and float(key[:-2]) > 0:
        total = int(float(key[:-2]) * GIB)
        return _generic(key, total, capability or GENERIC_CAPABILITY)
    raise ValueError(f"unknown GPU {name!r}: one of {', '.join(CARDS)} or <N>gb (such as 32gb)")


def _generic(name: str, total: int, capability: tuple[int, int]) -> Card:
    return Card(name, total, total - CUDA_CONTEXT_BYTES, capability)


@dataclass(frozen=True)
class ModelSizes:
    """What the plan reads from the model: component bytes at their load dtype and the expert's
    shape (for the activation formulas)."""

    expert_bytes: int  # one expert, parameters and buffers at the load dtype
    expert_block_linear_params: int  # the blocks' linear weights and biases (what fp8 stores in 1 byte)
    expert_largest_linear_bytes: int  # the widest linear (what fp8 storage upcasts at once)
    text_encoder_bytes: int
    text_encoder_largest_leaf_bytes: int  # what group offload streams at once (the embedding)
    vae_bytes: int
    compute_bytes: int = 2  # the experts' dtype (bf16)
    num_layers: int = 40
    dim: int = 5120
    ffn_dim: int = 13824
    vae_base_dim: int = 96

    A14B: ClassVar[ModelSizes]  # set below: the real Wan2.2-I2V-A14B, bf16 experts and umT5, float32 VAE

    def fp8_expert_bytes(self) -> int:
        """One expert with its block linears in one byte (fp8 storage or compute)."""
        return self.expert_bytes - self.expert_block_linear_params * (self.compute_bytes - 1)

    @classmethod
    def from_pipeline(cls, pipe: Any) -> ModelSizes:
        """The sizes of a loaded (or meta-device) ``WanImageToVideoPipeline``."""
        import torch

        def nbytes(module: torch.nn.Module) -> int:
            return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))

        expert = pipe.transformer
        linears = [m for m in expert.blocks.modules() if isinstance(m, torch.nn.Linear)]
        all_linears = [m for m in expert.modules() if isinstance(m, torch.nn.Linear)]
        leaves = [m for m in pipe.text_encoder.modules() if not list(m.children())]
        config = expert.config
        return cls(
            expert_bytes=nbytes(expert),
            expert_block_linear_params=sum(p.numel() for m in linears for p in m.parameters()),
            expert_largest_linear_bytes=max(
                (m.weight.numel() * m.weight.element_size() for m in all_linears), default=0
            ),
            text_encoder_bytes=nbytes(pipe.text_encoder),
            text_encoder_largest_leaf_bytes=max((nbytes(m) for m in leaves), default=0),
            vae_bytes=nbytes(pipe.vae),
            compute_bytes=expert.patch_embedding.weight.element_size(),
            num_layers=int(config["num_layers"]),
            dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
            ffn_dim=int(config["ffn_dim"]),
            vae_base_dim=int(pipe.vae.config["base_dim"]),
        )


# counted from the real classes at full size on the meta device (simulate.meta_expert, the A14B
# VAE at diffusers' defaults, google/umt5-xxl's encoder in bf16)
ModelSizes.A14B = ModelSizes(
    expert_bytes=28_637_218_944,
    expert_block_linear_params=14_053_314_560,
    expert_largest_linear_bytes=314_572_800,
    text_encoder_bytes=11_361_820_672,
    text_encoder_largest_leaf_bytes=2_100_297_728,
    vae_bytes=507_570_124,
)


@dataclass(frozen=True)
class Options:
    """The settings a plan takes, as the WANFORGE_* settings spell them, with their defaults
    (``memory_mode`` None: chosen by the plan)."""

    memory_mode: str | None = None
    fp8: str = "off"
    attention: str = "auto"
    compile: str = "off"
    step_cache: str = "off"
    vae_tiling: str = "auto"


@dataclass(frozen=True)
class Plan:
    """The whole decision. Byte counts are predictions from the simulated formulas."""

    card: str
    task: Literal["generate", "train"]
    memory_mode: MemoryMode | Literal["trainer"]  # "trainer": the trainer's own placement (one expert)
    fp8: Fp8Mode
    attention: AttentionBackend  # serving
    training_attention: AttentionBackend
    compile: CompileMode
    resident: tuple[str, ...]  # the components that stay on the device
    width: int
    height: int
    frames: int
    vae_tiled: bool
    weights_bytes: int  # on the device at the peak
    activation_bytes: int  # the peak of what the work allocates on top (simulated formula)
    available_bytes: int  # free memory less the allocator margin
    fits: bool
    advice: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    rank: int | None = None  # training
    gradient_checkpointing: bool | None = None  # training

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.activation_bytes

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["peak_bytes"] = self.peak_bytes
        return out

    def describe(self) -> str:
        """One line for the worker's log and ``wanforge plan``."""
        what = (
            f"{self.width}x{self.height}x{self.frames}"
            if self.task == "generate"
            else f"training {self.frames}-frame {self.height}x{self.width} rank {self.rank}"
        )
        return (
            f"plan for {self.card}, {what}: memory_mode={self.memory_mode} fp8={self.fp8} "
            f"attention={self.attention} training_attention={self.training_attention} "
            f"compile={self.compile} vae_tiled={self.vae_tiled} resident={','.join(self.resident) or 'none'}; "
            f"predicted peak {self.peak_bytes / GIB:.1f} GiB (weights {self.weights_bytes / GIB:.1f}, "
            f"activations {self.activation_bytes / GIB:.1f}) of {self.available_bytes / GIB:.1f} GiB "
            f"available: {'fits' if self.fits else 'does not fit'}"
        )


# --- activation formulas --------------------------------------------------------------------------


def tokens(width: int, height: int, frames: int) -> int:
    """Transformer tokens: latent frames (F-1)/4+1, latent H/8 and W/8, patched 1x2x2."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def forward_activation_bytes(sizes: ModelSizes, width: int, height: int, frames: int) -> int:
    """Peak bytes one expert forward allocates above its weights (calibrated formula)."""
    c = sizes.compute_bytes
    per_token = 4 * FORWARD_FP32_DIM_TENSORS * sizes.dim + c * (
        FORWARD_DIM_TENSORS * sizes.dim + FORWARD_FFN_TENSORS * sizes.ffn_dim
    )
    return tokens(width, height, frames) * per_token


def decode_activation_bytes(sizes: ModelSizes, width: int, height: int, frames: int, *, tiled: bool) -> int:
    """Peak bytes the float32 VAE decode allocates above its weights (calibrated formula)."""
    pixels = width * height
    if tiled:
        return TILED_DECODE_BYTES + TILED_DECODE_BYTES_PER_PIXEL_FRAME * pixels * frames
    per_pixel = DECODE_BYTES_PER_PIXEL * sizes.vae_base_dim // 96
    return pixels * (per_pixel + DECODE_BYTES_PER_PIXEL_FRAME * frames)


# --- the plan -------------------------------------------------------------------------------------


def choose_attention(card: Card, requested: str) -> tuple[AttentionBackend, AttentionBackend]:
    available = card.attention_backends()
    if requested == "auto":
        serving = available[0]
    elif requested not in ATTENTION_PREFERENCE:
        raise ValueError(
            f"WANFORGE_ATTENTION_BACKEND must be auto or one of {', '.join(ATTENTION_PREFERENCE)}, "
            f"got {requested!r}"
        )
    elif requested not in available:
        raise ValueError(
            f"WANFORGE_ATTENTION_BACKEND={requested} is not available on {card.name}; "
            f"available: {', '.join(available)}"
        )
    else:
        serving = requested
    training = serving if serving in TRAINABLE else next(b for b in TRAINABLE if b in available)
    return serving, training


@dataclass(frozen=True)
class _Layout:
    """What a memory mode keeps on the device, and its peak above what it keeps."""

    mode: MemoryMode
    resident: tuple[str, ...]
    weights: int
    activations: int


def _layouts(
    sizes: ModelSizes, fp8: Fp8Mode, width: int, height: int, frames: int, tiled: bool
) -> dict[MemoryMode, _Layout]:
    expert = sizes.fp8_expert_bytes() if fp8 != "off" else sizes.expert_bytes
    forward = forward_activation_bytes(sizes, width, height, frames)
    if fp8 == "storage":  # each linear is upcast for its own forward
        forward += sizes.expert_largest_linear_bytes
    elif fp8 == "compute":  # the float8 copy of each linear's input (torchao's dynamic quantization)
        forward += tokens(width, height, frames) * sizes.ffn_dim
    decode = decode_activation_bytes(sizes, width, height, frames, tiled=tiled)
    # the image condition is encoded from a full-size video with the same tiling: as much as the decode
    vae_work = decode
    text = sizes.text_encoder_bytes
    stream = 2 * sizes.text_encoder_largest_leaf_bytes  # a streamed group and the next, prefetched
    experts = ("transformer", "transformer_2")
    return {
        "gpu": _Layout(
            "gpu",
            (*experts, "text_encoder", "vae"),
            2 * expert + text + sizes.vae_bytes,
            max(forward, vae_work),
        ),
        "text_encoder_offload": _Layout(
            "text_encoder_offload",
            (*experts, "vae"),
            2 * expert + sizes.vae_bytes,
            max(forward, vae_work, stream),
        ),
        # one model at a time: the peak is the largest of its phases (that model's weights and work)
        "model_offload": _Layout(
            "model_offload", (), *max((expert, forward), (sizes.vae_bytes, vae_work), (text, 0), key=sum)
        ),
        "group_offload": _Layout(
            "group_offload",
            ("vae",),
            sizes.vae_bytes,
            max(forward + 2 * sizes.expert_largest_linear_bytes, vae_work, stream),
        ),
    }


_NO_ROOM_TO_CONVERT = (
    "torchao converts each expert on the GPU, and a bf16 expert ({expert:.1f} GiB) beside the other "
    "converted one does not fit"
)


def _fp8_compute_loads(card: Card, sizes: ModelSizes) -> bool:
    """torchao converts an expert where it is, on the GPU: one bf16 expert beside the other one
    already converted must fit (torchao 0.18 refuses to quantize without a sm89+ GPU present,
    so converting on the CPU first is not an option here)."""
    return sizes.expert_bytes + sizes.fp8_expert_bytes() + ALLOCATOR_MARGIN_BYTES <= card.free_bytes


def plan_generation(
    card: Card,
    sizes: ModelSizes,
    options: Options = Options(),
    resolution: str | tuple[int, int] = "720p",
    frames: int = DEFAULT_FRAMES,
) -> Plan:
    """The plan a worker takes on ``card`` to generate ``resolution`` (a preset or (width,
    height)) at ``frames``; raises ValueError for a setting that cannot run there."""
    width, height = SIZES[resolution] if isinstance(resolution, str) else resolution
    available = card.free_bytes - ALLOCATOR_MARGIN_BYTES
    if options.memory_mode is not None and options.memory_mode not in PREFERENCE:
        raise ValueError(
            f"WANFORGE_MEMORY_MODE must be one of {', '.join(PREFERENCE)}, got {options.memory_mode!r}"
        )
    if options.compile not in ("off", "regional", "auto"):
        raise ValueError(f"WANFORGE_COMPILE must be one of off, regional, auto, got {options.compile!r}")
    if not card.cuda:
        return _cpu_plan(card, sizes, options, width, height, frames)
    serving, training = choose_attention(card, options.attention)
    tiled = options.vae_tiling == "on" or (options.vae_tiling == "auto" and width * height > AUTO_TILING_AREA)
    notes: list[str] = []

    def fitting(fp8: Fp8Mode, modes: Iterable[MemoryMode], tiled: bool) -> _Layout | None:
        layouts = _layouts(sizes, fp8, width, height, frames, tiled)
        return next(
            (layouts[m] for m in modes if layouts[m].weights + layouts[m].activations <= available), None
        )

    requested_modes: tuple[MemoryMode, ...] = (
        tuple(m for m in PREFERENCE if m == options.memory_mode)
        if options.memory_mode is not None
        else PREFERENCE
    )
    resident_modes: tuple[MemoryMode, ...] = ("gpu", "text_encoder_offload")
    fp8 = _choose_fp8(card, sizes, options, requested_modes, fitting, tiled, notes)
    modes = tuple(m for m in requested_modes if m in resident_modes) if fp8 == "compute" else requested_modes
    if fp8 == "compute" and not modes:
        raise ValueError(
            f"WANFORGE_FP8=compute keeps both experts on the GPU (at about half their bf16 size); "
            f"WANFORGE_MEMORY_MODE={options.memory_mode} cannot be used with it: use gpu or text_encoder_offload, "
            "or WANFORGE_FP8=storage"
        )
    loads = fp8 != "compute" or _fp8_compute_loads(card, sizes)
    if not loads:
        notes.append(_NO_ROOM_TO_CONVERT.format(expert=sizes.expert_bytes / GIB))
    chosen = fitting(fp8, modes, tiled) if loads else None
    if loads and chosen is None and options.vae_tiling == "auto" and not tiled and fitting(fp8, modes, True):
        tiled = True  # the untiled decode is what does not fit: tile it at this size
        chosen = fitting(fp8, modes, True)
        notes.append("the untiled VAE decode does not fit beside the resident weights: the VAE runs tiled")
    layout = chosen or _layouts(sizes, fp8, width, height, frames, tiled)[modes[-1]]
    compile_mode = _choose_compile(options, fp8, layout.mode)
    plan = Plan(
        card=card.name,
        task="generate",
        memory_mode=layout.mode,
        fp8=fp8,
        attention=serving,
        training_attention=training,
        compile=compile_mode,
        resident=layout.resident,
        width=width,
        height=height,
        frames=frames,
        vae_tiled=tiled,
        weights_bytes=layout.weights,
        activation_bytes=layout.activations,
        available_bytes=available,
        fits=chosen is not None,
        notes=tuple(notes),
    )
    return plan if plan.fits else replace(plan, advice=_generation_advice(card, sizes, options, plan))


def _choose_fp8(
    card: Card,
    sizes: ModelSizes,
    options: Options,
    modes: tuple[MemoryMode, ...],
    fitting: Any,
    tiled: bool,
    notes: list[str],
) -> Fp8Mode:
    requested = options.fp8
    if requested not in ("off", "storage", "compute", "auto"):
        raise ValueError(f"WANFORGE_FP8 must be one of off, storage, compute, auto, got {requested!r}")
    regional = options.compile == "regional"
    if requested == "compute":
        if not card.fp8_compute:
            raise ValueError(
                f"WANFORGE_FP8=compute needs a CUDA GPU of compute capability 8.9 or newer and torchao; "
                f"{card.name} is sm{card.capability[0] if card.capability else 0}"
                f"{card.capability[1] if card.capability else 0}. Use WANFORGE_FP8=storage or off"
            )
        return "compute"
    if requested in ("off", "storage"):
        return "off" if requested == "off" else "storage"
    # auto: compute where it runs, loads and keeps both experts resident; else storage only where
    # it buys a more resident memory mode than bf16 (it costs an upcast per layer); else off
    resident = tuple(m for m in modes if m in ("gpu", "text_encoder_offload"))
    if card.fp8_compute and resident:
        if not _fp8_compute_loads(card, sizes):
            notes.append(
                "fp8 compute not chosen: " + _NO_ROOM_TO_CONVERT.format(expert=sizes.expert_bytes / GIB)
            )
        elif fitting("compute", resident, tiled) or fitting("compute", resident, True):
            return "compute"
    if regional:
        return "off"  # the casting hooks of storage cannot be compiled
    bf16 = fitting("off", modes, tiled)
    fp8 = fitting("storage", modes, tiled)
    if fp8 is not None and (
        bf16 is None or _TIER[fp8.mode] < _TIER[bf16.mode] or fp8.mode == bf16.mode == "group_offload"
    ):
        return "storage"
    return "off"


# How often a mode moves the experts between host and device: never (0), once each per job (1:
# model offload), every layer of every forward (2: group offload). fp8 storage upcasts every layer
# of every forward, so `auto` takes it only where it moves the experts less often, or where it
# halves what group offload streams at every forward; not to keep the text encoder resident too.
_TIER: dict[MemoryMode, int] = {"gpu": 0, "text_encoder_offload": 0, "model_offload": 1, "group_offload": 2}


def _choose_compile(options: Options, fp8: Fp8Mode, mode: MemoryMode) -> CompileMode:
    if options.compile == "regional":
        if mode == "group_offload":
            chosen = "WANFORGE_MEMORY_MODE=group_offload" if options.memory_mode else "group offload"
            why = "" if options.memory_mode else " (this GPU's free memory chose it)"
            raise ValueError(
                f"WANFORGE_COMPILE=regional cannot run with {chosen}{why}: its per-layer hooks break the "
                "compiled blocks' graphs; set WANFORGE_MEMORY_MODE=model_offload, WANFORGE_FP8=compute "
                "(sm89+), or WANFORGE_COMPILE=off"
            )
        if fp8 == "storage":
            raise ValueError(
                "WANFORGE_COMPILE=regional cannot run with WANFORGE_FP8=storage (its per-layer casting "
                "hooks cannot be compiled); use WANFORGE_FP8=compute (sm89+) or off"
            )
        return "regional"
    if options.compile == "auto":
        compilable = mode != "group_offload" and fp8 != "storage" and options.step_cache == "off"
        return "regional" if compilable else "off"
    return "off"


def _cpu_plan(card: Card, sizes: ModelSizes, options: Options, width: int, height: int, frames: int) -> Plan:
    """Everything resident on the CPU: no memory mode, no fp8 unless asked for (the loader has
    refused what the CPU cannot run before this), native attention."""
    if options.memory_mode not in (None, "gpu"):
        raise ValueError(f"memory_mode {options.memory_mode!r} needs a CUDA device")
    fp8: Fp8Mode = "storage" if options.fp8 == "storage" else "compute" if options.fp8 == "compute" else "off"
    layout = _layouts(sizes, fp8, width, height, frames, False)["gpu"]
    return Plan(
        card=card.name,
        task="generate",
        memory_mode="gpu",
        fp8=fp8,
        attention="native",
        training_attention="native",
        compile="regional" if options.compile == "regional" else "off",
        resident=layout.resident,
        width=width,
        height=height,
        frames=frames,
        vae_tiled=options.vae_tiling == "on",
        weights_bytes=layout.weights,
        activation_bytes=layout.activations,
        available_bytes=card.free_bytes,
        fits=layout.weights + layout.activations <= card.free_bytes,
    )


def _generation_advice(card: Card, sizes: ModelSizes, options: Options, plan: Plan) -> tuple[str, ...]:
    """What would make a plan that does not fit fit: settings first, then a smaller request."""
    advice: list[str] = []
    tries: list[tuple[str, Options]] = []
    if options.memory_mode is not None:
        tries.append(("unset WANFORGE_MEMORY_MODE", replace(options, memory_mode=None)))
    if options.fp8 != "storage":
        tries.append(("set WANFORGE_FP8=storage", replace(options, fp8="storage", compile="off")))
    if options.vae_tiling != "on":
        tries.append(("set WANFORGE_VAE_TILING=on", replace(options, vae_tiling="on")))
    for label, changed in tries:
        try:
            other = plan_generation(card, sizes, changed, (plan.width, plan.height), plan.frames)
        except ValueError:
            continue
        if other.fits:
            advice.append(f"{label} ({other.memory_mode}, {other.peak_bytes / GIB:.1f} GiB)")
    for name, (w, h) in SIZES.items():
        if w * h < plan.width * plan.height:
            other = plan_generation(card, sizes, options, (w, h), plan.frames)
            if other.fits:
                advice.append(f"serve up to {name} ({other.memory_mode}, {other.peak_bytes / GIB:.1f} GiB)")
                break
    if not advice:
        advice.append(
            f"a card with more than {(plan.peak_bytes + ALLOCATOR_MARGIN_BYTES) / GIB:.0f} GiB free"
        )
    return tuple(advice)


def options_from_settings(settings: Any) -> Options:
    """The plan's options from a worker's ``Settings`` (``WANFORGE_MEMORY_MODE``, ``_FP8``, ...)."""
    return Options(
        memory_mode=settings.memory_mode,
        fp8=settings.fp8,
        attention=settings.attention_backend,
        compile=settings.compile,
        step_cache=settings.step_cache,
        vae_tiling=settings.vae_tiling,
    )
