"""The acceptance run's server side: a real ``wanforge serve`` with random distill LoRAs, the
worker's GPU memory as nvidia-smi sees it, and the input image."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

from wanforge.engine.random_model import build_meta_components, parse_random_model


def write_distill_loras(model: str, rank: int, folder: Path) -> tuple[Path, Path]:
    """Random LoRA files on every linear of every block of ``model``'s experts (diffusers names;
    the shapes come from the meta-device build, so nothing of the model is made)."""
    from safetensors.torch import save_file

    parts = build_meta_components(parse_random_model(model), torch.bfloat16)
    linears = [
        (name, module)
        for name, module in parts.transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("blocks.")
    ]
    files = []
    for index, expert in enumerate(("high_noise", "low_noise")):
        gen = torch.Generator().manual_seed(index)
        tensors = {}
        for name, linear in linears:
            a = torch.randn(rank, linear.in_features, generator=gen) / linear.in_features**0.5
            b = torch.randn(linear.out_features, rank, generator=gen) * 0.01
            tensors[f"transformer.{name}.lora_A.weight"] = a.to(torch.bfloat16)
            tensors[f"transformer.{name}.lora_B.weight"] = b.to(torch.bfloat16)
        path = folder / f"distill_{expert}.safetensors"
        save_file(tensors, str(path))
        files.append(path)
    return files[0], files[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(model: str, folder: Path, env: dict[str, str], ready_s: float) -> Iterator[tuple[str, str, int]]:
    """``wanforge serve`` with one worker; yields (base URL, API key, server pid) once ready."""
    port = free_port()
    key = "wf_accept_" + secrets.token_hex(16)
    log = folder / "server.log"
    full_env = {
        **os.environ,
        "WANFORGE_API_KEY": key,
        "WANFORGE_ALLOW_PRIVATE_URLS": "1",  # the job reads its image from this server's own URL
        "WANFORGE_POLL_INTERVAL_S": "0.1",
        **env,
    }
    command = [sys.executable, "-m", "wanforge", "serve", "--port", str(port)]
    command += ["--data-dir", str(folder / "data"), "--model", model]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"the server did not become ready in {ready_s:.0f} s:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{base}/health", headers={"Authorization": f"Bearer {key}"}, timeout=5)
                if health.json().get("worker") == "ready":
                    break
            time.sleep(0.2)
        yield base, key, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class GpuMemorySampler:
    """The peak of nvidia-smi's used memory of the processes other than this one, sampled."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s = every_s
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
                text = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                for line in text.splitlines():
                    pid, used = (int(v) for v in line.split(","))
                    if pid != os.getpid():
                        self.peak_mib = max(self.peak_mib, used)
            self._stop.wait(self.every_s)

    def __enter__(self) -> GpuMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def input_image() -> bytes:
    from PIL import Image

    pixels = torch.linspace(0, 255, 1280 * 720 * 3).reshape(720, 1280, 3).to(torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")  # 16:9, so both presets are exact
    return out.getvalue()
