"""The LoRA trainer through the API: the official SDK end to end, hostile ZIPs, kill and resume."""

from __future__ import annotations

import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import wavespeed
from safetensors import safe_open

from tests.e2e.server import Server, running_server
from tests.training.synthetic import make_dataset_zip, make_zip_with_infos

pytestmark = pytest.mark.slow

TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zip") / "moves.zip"
    return make_dataset_zip(
        path, {"clips/a.mp4": "a square slides right", "clips/nested/b.webm": None}, frames=40
    )


def _download(url: str, target: Path) -> Path:
    target.write_bytes(httpx.get(url, timeout=30).content)
    return target


def test_sdk_trains_two_loras_that_diffusers_loads(server: Server, dataset_zip: Path, tmp_path: Path) -> None:
    from diffusers import WanImageToVideoPipeline

    from wanforge.engine.demo import build_demo_components

    client = wavespeed.Client(api_key=server.api_key, base_url=server.base_url)
    url = client.upload(str(dataset_zip))
    out = client.run(
        TRAINER,
        {"data": url, "trigger_word": "p3r5on", "steps": 100, "learning_rate": 0.0002, "lora_rank": 32},
        timeout=600,
    )
    high_url, low_url = out["outputs"]
    assert high_url.endswith("_high_noise.safetensors") and low_url.endswith("_low_noise.safetensors")
    high, low = (
        _download(high_url, tmp_path / "high.safetensors"),
        _download(low_url, tmp_path / "low.safetensors"),
    )
    with safe_open(str(high), "pt") as f:
        meta = f.metadata()
        assert any(k.startswith("diffusion_model.blocks.0.self_attn.q.lora_A") for k in f.keys())  # noqa: SIM118
    assert (
        meta["trigger_word"] == "p3r5on" and meta["expert"] == "high_noise" and int(meta["lora_rank"]) == 32
    )

    pipe: Any = WanImageToVideoPipeline(**build_demo_components().as_kwargs())  # type: ignore[no-untyped-call]
    pipe.load_lora_weights(str(high), adapter_name="high")
    pipe.load_lora_weights(str(low), adapter_name="low", load_into_transformer_2=True)
    assert "high" in pipe.transformer.peft_config and "low" in pipe.transformer_2.peft_config


def test_trainer_result_has_dataset_report(server: Server, dataset_zip: Path) -> None:
    with server.client() as c:
        url = server.upload(dataset_zip)
        pid = c.post(f"/api/v3/{TRAINER}", json={"data": url, "steps": 50, "lora_rank": 4}).json()["data"][
            "id"
        ]
    data = server.wait_for(pid, timeout_s=600)
    assert data["status"] == "completed", data
    report = data["result"]["dataset"]
    assert report["clips_used"] == 2 and report["windows_total"] >= 2
    assert report["captions"]  # captions used / missing are counted
    assert len(data["outputs"]) == 2


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ({"../evil.mp4": b"x"}, ".."),
        ({"/etc/evil.mp4": b"x"}, "absolute"),
        ({"notes.txt": b"hello", "pic.jpg": b"\xff\xd8"}, "no usable video"),
    ],
)
def test_hostile_zip_fails_with_1401(
    server: Server, tmp_path: Path, entries: dict[str, bytes], needle: str
) -> None:
    path = tmp_path / "bad.zip"
    infos = [(zipfile.ZipInfo(name), data) for name, data in entries.items()]
    make_zip_with_infos(path, infos)
    with server.client() as c:
        url = server.upload(path)
        pid = c.post(f"/api/v3/{TRAINER}", json={"data": url, "steps": 50}).json()["data"]["id"]
    data = server.wait_for(pid, timeout_s=120)
    assert data["status"] == "failed" and data["error_code"] == 1401, data
    assert needle in data["error"].lower(), data["error"]
    assert not (server.data_dir.parent / "evil.mp4").exists() and not Path("/etc/evil.mp4").exists()
    # the server keeps working
    assert server.health()["worker"] == "ready"


def test_not_a_zip_fails_with_1401(server: Server) -> None:
    import base64

    uri = "data:application/zip;base64," + base64.b64encode(b"this is not a zip at all").decode()
    with server.client() as c:
        pid = c.post(f"/api/v3/{TRAINER}", json={"data": uri, "steps": 50}).json()["data"]["id"]
    data = server.wait_for(pid, timeout_s=120)
    assert data["status"] == "failed" and data["error_code"] == 1401
    assert "not a zip" in data["error"].lower()


def test_worker_killed_mid_training_resumes_from_checkpoint(tmp_path: Path, dataset_zip: Path) -> None:
    with running_server(tmp_path, WANFORGE_LEASE_S="3") as server:
        with server.client() as c:
            url = server.upload(dataset_zip)
            pid = c.post(f"/api/v3/{TRAINER}", json={"data": url, "steps": 50, "lora_rank": 4}).json()[
                "data"
            ]["id"]
            deadline = time.monotonic() + 300
            worker_pid = None
            while time.monotonic() < deadline:
                data = c.get(f"/api/v3/predictions/{pid}/result").json()["data"]
                progress = data.get("progress") or {}
                # past the first checkpoint of the high-noise expert
                if progress.get("expert") == "high_noise" and progress.get("step", 0) >= 25:
                    worker_pid = next(w["pid"] for w in server.health()["workers"] if w["current_job"] == pid)
                    break
                time.sleep(0.05)
        assert worker_pid is not None, server.log()
        os.kill(worker_pid, signal.SIGKILL)
        data = server.wait_for(pid, timeout_s=600)
        assert data["status"] == "completed", (data, server.log())
        assert data["attempts"] == 2
        resumed = data["result"]["training"]["high_noise"]["resumed_from"]
        assert resumed >= 20, data["result"]["training"]
        assert len(data["outputs"]) == 2


def test_failed_training_leaves_no_job_directory(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    make_zip_with_infos(path, [(zipfile.ZipInfo("readme.md"), b"# nothing here")])
    with server.client() as c:
        url = server.upload(path)
        pid = c.post(f"/api/v3/{TRAINER}", json={"data": url, "steps": 50}).json()["data"]["id"]
    data = server.wait_for(pid, timeout_s=120)
    assert data["status"] == "failed" and data["error_code"] == 1401 and "1 .md" in data["error"]
    # the worker records the outcome, then removes the job's directory: on a loaded machine a poll
    # can see "failed" before the removal is through, so it gets a few seconds (not forever)
    job_dir = server.data_dir / "jobs" / pid
    deadline = time.monotonic() + 10
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job_dir.exists()
