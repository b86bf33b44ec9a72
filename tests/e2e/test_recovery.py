"""Jobs are never lost: a worker killed mid-job, and a server restarted with work queued."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, running_server
from tests.e2e.video import decode_mp4

pytestmark = pytest.mark.slow


def _upload_and_submit(server: Server, image: Path, resolution: str, seed: int) -> str:
    url = server.upload(image)
    with server.client() as c:
        resp = c.post(
            f"/api/v3/alibaba/wan-2.2/i2v-plus-{resolution}", json={"image": url, "prompt": "x", "seed": seed}
        )
    return str(resp.json()["data"]["id"])


def _worker_running(server: Server, prediction_id: str, timeout_s: float = 60) -> int:
    """Wait until a worker is mid-denoising on the job; return its pid."""
    deadline = time.monotonic() + timeout_s
    with server.client() as c:
        while time.monotonic() < deadline:
            data = c.get(f"/api/v3/predictions/{prediction_id}/result").json()["data"]
            progress = data.get("progress") or {}
            if (
                data["status"] == "processing"
                and progress.get("stage") == "denoising"
                and progress.get("step", 0) >= 1
            ):
                for w in server.health()["workers"]:
                    if w["current_job"] == prediction_id:
                        return int(w["pid"])
            time.sleep(0.02)
    raise TimeoutError("job never reached the denoising stage")


def test_worker_killed_mid_job_completes_once(tmp_path: Path, image_16x9: Path) -> None:
    with running_server(tmp_path) as server:
        pid = _upload_and_submit(server, image_16x9, "1080p", seed=21)
        worker_pid = _worker_running(server, pid)
        os.kill(worker_pid, signal.SIGKILL)
        data = server.wait_for(pid, timeout_s=240)
        assert data["status"] == "completed", (data, server.log())
        assert data["attempts"] == 2
        assert data["seed"] == 21
        assert len(data["outputs"]) == 1
        outputs = list((server.data_dir / "files" / "outputs").rglob("*.mp4"))
        assert len(outputs) == 1, outputs
        video = decode_mp4(httpx.get(data["outputs"][0], timeout=30).content)
        assert (video.width, video.height, video.frames) == (1920, 1080, 81)
        # the supervisor replaced the killed worker
        assert all(w["pid"] != worker_pid for w in server.health()["workers"])


def test_queued_work_survives_a_server_restart(tmp_path: Path, image_16x9: Path) -> None:
    with running_server(tmp_path, "--workers", "0", wait_ready=False) as server:
        server.wait_up()
        ids = [_upload_and_submit(server, image_16x9, "480p", seed=s) for s in (1, 2)]
        with server.client() as c:
            assert all(
                c.get(f"/api/v3/predictions/{i}/result").json()["data"]["status"] == "created" for i in ids
            )
    with running_server(tmp_path) as server:
        for i in ids:
            assert server.wait_for(i)["status"] == "completed"


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie (exited, not yet reaped by its parent) counts as gone
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_its_server(tmp_path: Path, sig: signal.Signals) -> None:
    with running_server(tmp_path) as server:
        worker_pid = int(server.health()["workers"][0]["pid"])
        server.process.send_signal(sig)
        server.process.wait(timeout=30)
        assert _gone(worker_pid, 20), f"worker {worker_pid} outlived its server after {sig.name}"
