"""Jobs are never lost, and failures say what happened: a worker killed mid-job or while
loading, a cancel over HTTP, a model that fails to load, a server restarted with work queued."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


HOOKS = Path(__file__).parent / "hooks"


@contextmanager
def hooked_server(
    tmp: Path, *args: str, wait_ready: bool = True, **env: str
) -> Iterator[tuple[Server, Path]]:
    """A server whose workers load `hooks/sitecustomize.py`: triggers in the yielded folder park
    a worker while it loads or after a given denoising step."""
    triggers = tmp / "hooks"
    triggers.mkdir()
    path = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH", "")) if p)
    with running_server(
        tmp, *args, wait_ready=wait_ready, PYTHONPATH=path, WANFORGE_TEST_HOOKS=str(triggers), **env
    ) as server:
        yield server, triggers


def _wait_file(path: Path, server: Server, timeout_s: float = 120) -> int:
    """Wait until a parked worker announced itself in `path`; return its pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"no worker parked at {path.name}:\n{server.log()}")


def test_worker_killed_mid_job_completes_once(tmp_path: Path, image_16x9: Path) -> None:
    with hooked_server(tmp_path) as (server, triggers):
        (triggers / "park-step").write_text("2")
        pid = _upload_and_submit(server, image_16x9, "1080p", seed=21)
        worker_pid = _wait_file(triggers / "parked", server)  # parked after denoising step 2
        assert [w["current_job"] for w in server.health()["workers"] if w["pid"] == worker_pid] == [pid]
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


def test_http_cancel_of_a_running_job(tmp_path: Path, image_16x9: Path) -> None:
    with hooked_server(tmp_path) as (server, triggers):
        (triggers / "park-step").write_text("1")
        pid = _upload_and_submit(server, image_16x9, "480p", seed=3)
        _wait_file(triggers / "parked", server)
        with server.client() as c:
            resp = c.delete(f"/api/v3/predictions/{pid}")
        assert resp.status_code == 200 and resp.json()["data"]["status"] == "processing"
        (triggers / "resume").touch()
        data = server.wait_for(pid)
        assert (data["status"], data["outputs"], data["error"]) == ("cancelled", [], "cancelled by request")
        assert list((server.data_dir / "files").rglob("*.mp4")) == []


def test_worker_killed_while_loading_is_restarted_and_runs_the_job(tmp_path: Path, image_16x9: Path) -> None:
    with hooked_server(tmp_path, wait_ready=False) as (server, triggers):
        (triggers / "park-load").touch()
        server.wait_up()
        loading_pid = _wait_file(triggers / "loading", server)
        assert server.health()["worker"] == "loading"
        pid = _upload_and_submit(server, image_16x9, "480p", seed=5)
        os.kill(loading_pid, signal.SIGKILL)
        data = server.wait_for(pid)
        assert (data["status"], data["attempts"]) == ("completed", 1), (data, server.log())
        assert all(w["pid"] != loading_pid for w in server.health()["workers"])


def test_a_model_that_fails_to_load_leaves_the_queue_alone(tmp_path: Path, image_16x9: Path) -> None:
    missing = tmp_path / "no-such-model"
    with running_server(
        tmp_path, "--model", str(missing), wait_ready=False, WANFORGE_WORKER_TOUCH_S="0.2"
    ) as server:
        server.wait_up()
        pid = _upload_and_submit(server, image_16x9, "480p", seed=5)
        body = _wait_health(server, lambda b: b["worker"] == "failed")
        [worker] = body["workers"]
        assert worker["detail"] == "ModelLoadError: model directory no-such-model does not exist"
        public = httpx.get(f"{server.base_url}/health", timeout=10).json()
        assert set(public) == {"status", "version", "worker", "content_checker", "attention_backend"}
        assert public["worker"] == "failed" and public["attention_backend"] is None  # nothing loaded
        # the failed worker keeps reporting (its loop goes on) and never claims the job
        _wait_health(server, lambda b: b["workers"][0]["heartbeat_at"] != worker["heartbeat_at"])
        with server.client() as c:
            data = c.get(f"/api/v3/predictions/{pid}/result").json()["data"]
        assert (data["status"], data["attempts"], data["error"]) == ("created", 0, "")


def _wait_health(
    server: Server, ok: Callable[[dict[str, Any]], bool], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = server.health()
        if body.get("workers") and ok(body):
            return body
        time.sleep(0.1)
    raise TimeoutError(f"health never matched:\n{server.log()}")


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
