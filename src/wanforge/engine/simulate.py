"""Full-size simulation of the real modules on the CPU, with no memory: peak device bytes.

The real classes (diffusers' ``WanTransformer3DModel`` with the A14B config, ``AutoencoderKLWan``
with its full config, the trainer's own LoRA and memory code) are built on the ``meta`` device,
given storage-less tensors with ``to_empty`` inside ``FakeTensorMode`` and run there: every op
computes shapes and dtypes only, so a 14-billion-parameter expert's forward at 1080p runs in about
a second on a laptop CPU and allocates nothing. While it runs, :class:`AllocationCounter` adds up
the bytes of every tensor storage created on the simulated device and subtracts them when the
storage dies; its peak is what ``torch.cuda.max_memory_allocated`` would report for the same
calls (live tensor bytes, before the CUDA caching allocator's block rounding and slack).

Every figure here is *simulated* (FakeTensorMode, CPU), not measured on a GPU. The device
simulated is the CPU: its SDPA runs the flash kernel (``_scaled_dot_product_flash_attention_for_cpu``:
the output and a float32 log-sum-exp, no S x S matrix), as CUDA's flash and cuDNN kernels do.
A fake CUDA device would not do: without a GPU, SDPA falls back to the math kernel there.

torch's own ``torch.distributed._tools.mem_tracker.MemTracker`` gives the same peak (a test
compares them) but updates per-module statistics on every op: 19 s instead of 0.7 s for one
720p forward here, too slow for tests and the plan, hence the small counter below.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from wanforge.engine.random_model import A14B_EXPERT, A14B_VAE

# Wan2.2-I2V-A14B, each expert: the one copy of its config (random_model.A14B_EXPERT)
A14B: dict[str, Any] = A14B_EXPERT
TEXT_TOKENS = 512
LATENT_CHANNELS = 16
CONDITION_CHANNELS = 20  # the I2V condition: 16 VAE channels + the 4-channel first-frame mask
# pixel sizes (width, height) of the served presets; native 1080p denoises at 1920x1088
SIZES: dict[str, tuple[int, int]] = {"480p": (832, 480), "720p": (1280, 720), "1080p": (1920, 1088)}
# the simulated device; the "host" that activation offload moves saved tensors to
DEVICE = torch.device("cpu")
HOST = torch.device("meta")


class AllocationCounter(TorchDispatchMode):
    """Live bytes of the tensor storages on ``device`` created while the mode is active, and
    their peak. A storage is counted once however many views it has, when an op first returns
    it, and uncounted when it is freed (a weakref callback). Runs inside a ``FakeTensorMode``
    (or on real tensors: the counting does not depend on the values)."""

    def __init__(self, device: torch.device = DEVICE) -> None:
        super().__init__()
        self.device = device
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref[torch.UntypedStorage]] = {}

    def _free(self, key: int, nbytes: int, _ref: object) -> None:
        self._refs.pop(key, None)
        self.live -= nbytes

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)
        known = self._refs.get(key)
        if known is not None and known() is storage:
            return
        nbytes = storage.nbytes()
        self._refs[key] = weakref.ref(storage, functools.partial(self._free, key, nbytes))
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def hold(self, tensors: Iterable[torch.Tensor]) -> int:
        """Count tensors made before the mode started (weights, inputs), so that freeing them
        counts too (fp8 casting replaces weights); returns the live bytes after."""
        for tensor in tensors:
            if tensor.device.type == self.device.type:
                self._track(tensor.untyped_storage())
        return self.live

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        # a view or an in-place result shares an input's storage: nothing new was allocated
        inputs = {
            id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and item.device.type == self.device.type:
                storage = item.untyped_storage()
                if id(storage) not in inputs:
                    self._track(storage)
        return out


@dataclass(frozen=True)
class Simulated:
    """One simulated run: bytes resident before it (weights, inputs) and its peak above them."""

    what: str
    resident_bytes: int  # on the device when the run starts (weights, inputs, LoRA and optimizer)
    activation_bytes: int  # the peak of what the run allocates on top
    seconds: float  # wall time of the simulation on this CPU

    @property
    def peak_bytes(self) -> int:
        return self.resident_bytes + self.activation_bytes


def fake_mode() -> FakeTensorMode:
    # the meta model's buffers (rope tables) are not fake tensors yet when to_empty copies them
    return FakeTensorMode(allow_non_fake_inputs=True)


def module_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def _cast_like_from_pretrained(model: Any, dtype: torch.dtype) -> None:
    """``dtype`` for every parameter but the ones diffusers' ``from_pretrained(torch_dtype=)``
    keeps in float32 (``_keep_in_fp32_modules``: the norms, the time embedder, the modulation)."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        if not any(part in keep for part in name.split(".")):
            param.data = param.data.to(dtype)


def meta_expert(num_layers: int | None = None, dtype: torch.dtype = torch.bfloat16) -> WanTransformer3DModel:
    """A full-width A14B expert on the meta device (``num_layers`` blocks, default 40), cast as
    ``from_pretrained`` casts it."""
    config = dict(A14B) if num_layers is None else {**A14B, "num_layers": num_layers}
    with torch.device("meta"):
        model = WanTransformer3DModel(**config)
    _cast_like_from_pretrained(model, dtype)
    return model


def latent_grid(width: int, height: int, frames: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width) of a video: the VAE's 4x8x8 stride."""
    return (frames - 1) // 4 + 1, height // 8, width // 8


def tokens(width: int, height: int, frames: int) -> int:
    """Transformer tokens of a video: the latent grid patched 1x2x2."""
    f, h, w = latent_grid(width, height, frames)
    return f * (h // 2) * (w // 2)


@contextmanager
def timed(into: list[float]) -> Iterator[None]:
    started = time.perf_counter()
    yield
    into.append(time.perf_counter() - started)


def simulate_forward(
    width: int, height: int, frames: int = 81, *, num_layers: int | None = None
) -> Simulated:
    """One expert forward (bf16, no grad, native SDPA) on one video: the denoising step's peak."""
    seconds: list[float] = []
    with timed(seconds):
        model = meta_expert(num_layers)  # outside the fake mode: to_empty swaps meta for fake
        with fake_mode():
            model.to_empty(device=DEVICE)
            f, h, w = latent_grid(width, height, frames)
            hidden = torch.empty(1, A14B["in_channels"], f, h, w, dtype=torch.bfloat16)
            text = torch.empty(1, TEXT_TOKENS, A14B["text_dim"], dtype=torch.bfloat16)
            timestep = torch.tensor([900.0])
            counter = AllocationCounter()
            resident = counter.hold([*module_tensors(model), hidden, text, timestep])
            with counter, torch.no_grad():
                model(hidden_states=hidden, encoder_hidden_states=text, timestep=timestep, return_dict=False)
    return Simulated(
        f"expert forward {width}x{height}x{frames}", resident, counter.peak - resident, seconds[0]
    )


def meta_vae() -> AutoencoderKLWan:
    """The Wan 2.1 VAE of Wan 2.2 A14B at its full config (diffusers' defaults), float32."""
    with torch.device("meta"):
        return AutoencoderKLWan(**A14B_VAE)


def simulate_vae_decode(width: int, height: int, frames: int = 81, *, tiled: bool = False) -> Simulated:
    """The VAE decode as the engine runs it: float32, one video, tiled when asked (diffusers'
    default 256-pixel tiles every 192, what ``WANFORGE_VAE_TILING=auto`` uses above 720p)."""
    seconds: list[float] = []
    with timed(seconds):
        vae = meta_vae()
        if tiled:
            vae.enable_tiling()
        with fake_mode():
            vae.to_empty(device=DEVICE)
            f, h, w = latent_grid(width, height, frames)
            latents = torch.empty(1, LATENT_CHANNELS, f, h, w, dtype=torch.float32)
            counter = AllocationCounter()
            resident = counter.hold([*module_tensors(vae), latents])
            with counter, torch.no_grad():
                vae.decode(latents, return_dict=False)
    return Simulated(
        f"VAE decode {width}x{height}x{frames}{' tiled' if tiled else ''}",
        resident,
        counter.peak - resident,
        seconds[0],
    )


def simulate_vae_encode(width: int, height: int, frames: int = 81) -> Simulated:
    """The VAE encode of the I2V condition as the pipeline runs it: a float32 video of the first
    frame and zeros, ``frames`` long, encoded untiled (resident: the VAE and that video)."""
    seconds: list[float] = []
    with timed(seconds):
        vae = meta_vae()
        with fake_mode():
            vae.to_empty(device=DEVICE)
            video = torch.empty(1, 3, frames, height, width, dtype=torch.float32)
            counter = AllocationCounter()
            resident = counter.hold([*module_tensors(vae), video])
            with counter, torch.no_grad():
                vae.encode(video)
    return Simulated(f"VAE encode {width}x{height}x{frames}", resident, counter.peak - resident, seconds[0])
