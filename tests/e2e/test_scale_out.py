"""The service split over processes as a deployment runs it (docs/deployment.md): two API
processes (`serve --no-workers`) on one PostgreSQL and one shared data directory, and a worker
process of its own. Either API process serves everything, one killed loses nothing, and a
PostgreSQL restart in the middle of a job loses nothing either."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import wavespeed

from tests.e2e.server import API_KEY, Server, running_server
from tests.e2e.video import decode_mp4
from tests.training.synthetic import make_dataset_zip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PG_SCRIPT = ROOT / "scripts" / "test-postgres.sh"
HOOKS = Path(__file__).parent / "hooks"
MODEL = "alibaba/wan-2.2/i2v-plus-480p"
TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"


def _pg(command: str, directory: Path) -> str:
    done = subprocess.run(
        ["bash", str(PG_SCRIPT), command, str(directory)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL server of this test's own (it is restarted, so not the suite's shared one).
    Its directory is made under /tmp: the server's user must be able to enter it."""
    installed = shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not installed and os.geteuid() != 0:
        pytest.skip("no PostgreSQL server binaries (scripts/test-postgres.sh installs them as root)")
    directory = Path(tempfile.mkdtemp(prefix="wanforge-scale-pg."))
    url = _pg("start", directory)
    try:
        yield url, directory
    finally:
        _pg("stop", directory)


def _start_worker(tmp: Path, data_dir: Path, url: str, hooks: Path, log: Path) -> subprocess.Popen[bytes]:
    path = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "WANFORGE_TEST_HOOKS": str(hooks),
        "WANFORGE_ALLOW_PRIVATE_URLS": "1",
        "WANFORGE_LEASE_S": "3",
        "WANFORGE_POLL_INTERVAL_S": "0.1",
        "WANFORGE_STORE_RETRY_S": "120",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wanforge", "worker", "--data-dir", str(data_dir), "--database-url", url],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait(condition: object, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def _ready(server: Server) -> bool:
    try:
        return server.health().get("worker") == "ready"
    except httpx.HTTPError:
        return False


def test_two_api_processes_a_worker_and_a_postgres_restart(
    tmp_path: Path, private_postgres: tuple[str, Path], image_16x9: Path
) -> None:
    url, pg_dir = private_postgres
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    with ExitStack() as stack:
        a = stack.enter_context(
            running_server(tmp_path, "--no-workers", wait_ready=False, WANFORGE_DATABASE_URL=url)
        )
        b = stack.enter_context(
            running_server(tmp_path, "--no-workers", wait_ready=False, WANFORGE_DATABASE_URL=url)
        )
        assert a.data_dir == b.data_dir  # one shared data directory, as on a shared path
        worker = _start_worker(tmp_path, a.data_dir, url, hooks, tmp_path / "worker.log")
        stack.callback(_kill, worker)
        _wait(lambda: _ready(a) and _ready(b), "the worker never became ready:\n" + a.log())

        # the seed's flow through the SDK: upload to A, run through B, read through either
        sdk_a = wavespeed.Client(api_key=API_KEY, base_url=a.base_url)
        sdk_b = wavespeed.Client(api_key=API_KEY, base_url=b.base_url)
        image_url = sdk_a.upload(str(image_16x9))
        out = sdk_b.run(MODEL, {"image": image_url, "prompt": "x", "seed": 3}, timeout=180)
        video_url = out["outputs"][0]
        assert video_url.startswith(b.base_url)
        via_a = httpx.get(video_url.replace(b.base_url, a.base_url), timeout=30).content
        assert via_a == httpx.get(video_url, timeout=30).content
        video = decode_mp4(via_a)
        assert (video.width, video.height, video.frames) == (832, 480, 81)

        # the SDK trainer flow through A
        zip_path = make_dataset_zip(tmp_path / "moves.zip", {"a.mp4": "a square slides right"}, frames=24)
        trained = sdk_a.run(
            TRAINER,
            {"data": sdk_b.upload(str(zip_path)), "trigger_word": "sq", "steps": 50, "lora_rank": 4},
            timeout=300,
        )
        assert [u.rsplit("_", 1)[-1] for u in trained["outputs"]] == ["noise.safetensors"] * 2

        # kill A outright: B serves everything A made, and new work
        os.killpg(a.process.pid, signal.SIGKILL)
        a.process.wait()
        with b.client() as c:
            listed = c.post("/api/v3/predictions", json={}).json()["data"]["items"]
            done = {(p["model"], p["status"], tuple(p["outputs"])) for p in listed}
            assert (MODEL, "completed", (video_url,)) in done
            trained_outputs = tuple(u.replace(a.base_url, b.base_url) for u in trained["outputs"])
            assert (TRAINER, "completed", trained_outputs) in done
            assert httpx.get(image_url.replace(a.base_url, b.base_url), timeout=30).status_code == 200

        # PostgreSQL restarted while a job is running: the job completes once, nothing is lost
        (hooks / "park-step").write_text("2")
        with b.client() as c:  # (behind a load balancer WANFORGE_PUBLIC_URL names it; here: B)
            image_b = image_url.replace(a.base_url, b.base_url)
            submitted = c.post(f"/api/v3/{MODEL}", json={"image": image_b, "prompt": "y", "seed": 5})
        pid = submitted.json()["data"]["id"]
        _wait(lambda: (hooks / "parked").exists(), "the worker never reached step 2:\n" + a.log())
        worker_log = tmp_path / "worker.log"
        seen = len(worker_log.read_bytes())
        _pg("down", pg_dir)
        with b.client() as c:
            during = c.get(f"/api/v3/predictions/{pid}/result")
        assert during.status_code == 503 and during.json()["code"] == 5003, during.text
        assert during.headers["retry-after"]
        (hooks / "resume").write_text("")  # the worker finishes its steps while the store is down
        _wait(lambda: b"unavailable" in worker_log.read_bytes()[seen:], "the worker never met the outage")
        _pg("up", pg_dir)
        data = b.wait_for(pid, timeout_s=180)
        assert data["status"] == "completed", (data, (tmp_path / "worker.log").read_text()[-4000:])
        assert data["seed"] == 5 and len(data["outputs"]) == 1
        outputs = sorted((b.data_dir / "files" / "outputs").rglob("*.mp4"))
        assert len(outputs) == 2, outputs  # the first job's and this one's: no duplicate
        assert worker.poll() is None  # the worker rode out the outage
