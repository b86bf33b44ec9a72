"""Worker actors on a real two-node Ray cluster (`wanforge workers --ray`), one API process
(`serve --no-workers`), the demo model, files in S3 (moto's real S3 server, tests/s3.py), each
node its own data directory (its jobs' local files), and the store in the API's data directory
(SQLite), or on PostgreSQL when `WANFORGE_TEST_DATABASE_URL` is set (as in CI).

- jobs spread over both nodes (each node's actor completes at least one);
- a node killed (SIGKILL to its raylet) mid-generation: the job completes on the other node,
  once, with one output;
- the node back, then killed mid-training after its first checkpoint reached S3: the other
  node resumes the job from that checkpoint, stores one pair of LoRAs, and deletes the
  job's checkpoints from S3;
- an actor killed is restarted by Ray, up to `--max-restarts`, then given up for good;
- SIGTERM to `workers --ray` stops its actors, each releasing its running job; SIGKILL to it,
  and Ray ends its actors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.cluster.ray_local import RayCluster, leftovers, start_again, two_node_cluster
from tests.e2e.server import Server, running_server
from tests.s3 import CREDENTIALS, S3Endpoint
from tests.training.synthetic import make_dataset_zip

pytest.importorskip("ray", reason="ray is not installed (pip install 'wanforge[ray]'; CI installs it)")

pytestmark = pytest.mark.slow

HOOKS = Path(__file__).parent / "hooks"
ENV = {
    "WANFORGE_LEASE_S": "3",
    "WANFORGE_POLL_INTERVAL_S": "0.1",
    "WANFORGE_WORKER_TOUCH_S": "0.5",
    "OMP_WAIT_POLICY": "PASSIVE",
    "WANFORGE_CONTENT_CHECKER": "none",  # not what these tests are about; it costs seconds a job
}
# each node's processes (its actors) get the S3 credentials from the node's environment
CLUSTER_ENV = {**ENV, **CREDENTIALS}
MAX_RESTARTS = 1
PREFIX = "wf"  # the storage's prefix in the test's bucket
TRAINER = "wavespeed-ai/wan-2.2-i2v-lora-trainer"
FIRST_CHECKPOINT = 10  # the demo model's training profile checkpoints every 10 steps
POSTGRES_URL = os.environ.get("WANFORGE_TEST_DATABASE_URL")
T = TypeVar("T")


def poll(what: str, check: Callable[[], T | None], timeout_s: float, logs: Callable[[], str]) -> T:
    """`check()` until it returns something true, else fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout_s}s\n{logs()}")


@dataclass
class Workers:
    """One `wanforge workers --ray` process, its actor pinned to one node by `--resources`."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Setup:
    cluster: RayCluster
    server: Server
    workers: dict[str, Workers]  # node_a | node_b -> the CLI whose actor runs there
    env: dict[str, str]  # the settings of the API process and the workers' CLIs
    s3: S3Endpoint
    bucket: str

    def logs(self) -> str:
        texts = [f"--- workers on {name}\n{w.text()[-5000:]}" for name, w in self.workers.items()]
        return "\n".join([*texts, f"--- server\n{self.server.log()}", self.cluster.logs()])

    def node(self, worker_id: str) -> str | None:
        """node_a | node_b: the node of the CLI that started the worker's actor (it logs
        `worker actor <n>: worker <id> on node <Ray node id>` and its actor asks for that node's
        resource); the worker id ends in `-ray<first 8 of the node id>-<random>`."""
        for name, w in self.workers.items():
            if match := re.search(rf"worker {worker_id} on node ([0-9a-f]+)", w.text()):
                assert worker_id.rsplit("-", 2)[1] == f"ray{match[1][:8]}", (worker_id, match[1])
                return name
        return None  # not logged yet

    def ready_workers(self) -> list[dict[str, Any]]:
        return [w for w in self.server.health().get("workers", []) if w["state"] == "ready"]

    def submit(self, image_url: str, seed: int) -> str:
        with self.server.client() as c:
            resp = c.post(
                "/api/v3/alibaba/wan-2.2/i2v-plus-480p",
                json={"image": image_url, "prompt": "x", "seed": seed},
            )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["data"]["id"])

    def ran_on(self, prediction_id: str) -> list[str | None]:
        """The nodes whose workers started an attempt of the job, in order (each worker's own
        log line `job <id>: attempt <n> on worker <id>`, forwarded by Ray to the CLI's output)."""
        text = "".join(w.text() for w in self.workers.values())
        found = re.findall(rf"job {prediction_id}: attempt (\d+) on worker (\S+)", text)
        # a line may come twice: the two nodes' log monitors both read this host's Ray logs
        return [self.node(worker) for _, worker in sorted(set(found))]

    def keys(self, under: str) -> list[str]:
        """The storage's keys starting with `under`, in the bucket."""
        pages = (
            self.s3.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=f"{PREFIX}/{under}")
        )
        return sorted(o["Key"].removeprefix(f"{PREFIX}/") for page in pages for o in page.get("Contents", []))

    def outputs(self) -> list[str]:
        return [key for key in self.keys("outputs/") if key.endswith(".mp4")]


def _start_workers(address: str, node: str, root: Path, env: dict[str, str]) -> Workers:
    """The node's own data directory (its jobs' local files); the store, when SQLite, in the API
    process's."""
    log_path = root / f"workers-{node}.log"
    store = {"WANFORGE_DATABASE_URL": f"sqlite:///{root / 'data' / 'wanforge.db'}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wanforge",
                "workers",
                "--ray",
                address,
                "--count",
                "1",
                "--cpus-per-worker",
                "1",
                "--resources",
                json.dumps({node: 1}),
                "--max-restarts",
                str(MAX_RESTARTS),
                "--data-dir",
                str(root / f"data-{node}"),
            ],
            env={**os.environ, **store, **env, "RAY_DEDUP_LOGS": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Workers(process, log_path)


def _stop_workers(workers: Workers) -> None:
    if workers.process.poll() is None:
        workers.process.send_signal(signal.SIGTERM)
    try:
        workers.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(workers.process.pid, signal.SIGKILL)
        workers.process.wait()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.samples import png_bytes

    path = tmp_path_factory.mktemp("ray-image") / "frame.png"
    path.write_bytes(png_bytes(320, 180, seed=7))
    return path


@contextmanager
def store_env() -> Iterator[dict[str, str]]:
    """SQLite in the data directory ({}), or a fresh PostgreSQL database, dropped afterwards."""
    if not POSTGRES_URL:
        yield {}
        return
    name = f"wanforge_ray_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield {"WANFORGE_DATABASE_URL": make_url(POSTGRES_URL).set(database=name).render_as_string(False)}
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def setup(s3_endpoint: S3Endpoint) -> Iterator[Setup]:
    root = Path(tempfile.mkdtemp(prefix="wf-ray-", dir="/tmp"))  # short: Ray's socket paths
    workers: dict[str, Workers] = {}
    bucket = s3_endpoint.new_bucket()
    storage = {
        **CREDENTIALS,
        "WANFORGE_STORAGE_URL": f"s3://{bucket}/{PREFIX}",
        "WANFORGE_S3_ENDPOINT_URL": s3_endpoint.url,
    }
    with store_env() as store:
        yield from _setup(root, workers, {**ENV, **storage, **store}, s3_endpoint, bucket)


def _setup(
    root: Path, workers: dict[str, Workers], env: dict[str, str], s3: S3Endpoint, bucket: str
) -> Iterator[Setup]:

    def start_workers(cluster: RayCluster) -> None:  # while node_b starts: actors wait for room
        for name in ("node_a", "node_b"):
            workers[name] = _start_workers(cluster.address, name, root, env)

    try:
        with (
            running_server(root, "--no-workers", wait_ready=False, **env) as server,
            two_node_cluster(root, str(HOOKS), CLUSTER_ENV, then=start_workers) as cluster,
        ):
            server.wait_up()
            try:
                yield Setup(cluster, server, workers, env, s3, bucket)
            finally:
                for w in workers.values():
                    _stop_workers(w)
    finally:
        for w in workers.values():  # when the cluster never came up
            _stop_workers(w)
    assert leftovers(root) == []
    shutil.rmtree(root, ignore_errors=True)


def _both_nodes_ready(s: Setup) -> list[dict[str, Any]] | None:
    ready = s.ready_workers()
    return ready if sorted(str(s.node(w["id"])) for w in ready) == ["node_a", "node_b"] else None


def _ran_once(s: Setup, prediction_id: str) -> list[str | None]:
    return poll(f"{prediction_id} in the workers' logs", lambda: s.ran_on(prediction_id), 10, s.logs)


def test_jobs_spread_over_both_nodes(setup: Setup, image: Path) -> None:
    poll("a ready worker on each node", lambda: _both_nodes_ready(setup), 90, setup.logs)
    url = setup.server.upload(image)
    ids = [setup.submit(url, seed) for seed in (1, 2)]  # both workers idle: each claims one
    for pid in ids:
        data = setup.server.wait_for(pid, timeout_s=120)
        assert (data["status"], data["attempts"], len(data["outputs"])) == ("completed", 1, 1), data
    ran = {pid: _ran_once(setup, pid) for pid in ids}
    assert all(len(nodes) == 1 for nodes in ran.values()), (ran, setup.logs())
    assert {nodes[0] for nodes in ran.values()} == {"node_a", "node_b"}, ran
    assert (setup.server.data_dir / "wanforge.db").exists() is (POSTGRES_URL is None)


def test_a_node_killed_mid_generation_loses_nothing(setup: Setup, image: Path) -> None:
    """node_b's worker parks after denoising step 2; SIGKILL to node_b's raylet ends the node
    (its worker with it); the lease runs out and node_a's worker runs the job again, once."""
    poll("a ready worker on each node", lambda: _both_nodes_ready(setup), 90, setup.logs)
    before = setup.outputs()
    node_b = setup.cluster.nodes["node_b"]
    (node_b.hooks / "park-step").write_text("2")
    url = setup.server.upload(image)
    # two jobs at once: each idle worker claims one, so node_b's worker parks on its job
    submitted = [setup.submit(url, 10 + i) for i in range(2)]
    parked_pid = int(poll("node_b's worker parked", lambda: _read(node_b.hooks / "parked"), 120, setup.logs))
    [parked_job] = [w["current_job"] for w in setup.server.health()["workers"] if w["pid"] == parked_pid]
    assert parked_job in submitted
    os.kill(node_b.raylet_pid(), signal.SIGKILL)
    poll("node_b's parked worker gone", lambda: not _alive(parked_pid), 30, setup.logs)
    for pid in submitted:
        data = setup.server.wait_for(pid, timeout_s=120)
        assert (data["status"], len(data["outputs"])) == ("completed", 1), data
        assert data["attempts"] == (2 if pid == parked_job else 1), data
    ran = poll(
        "both attempts logged", lambda: r if len(r := setup.ran_on(parked_job)) == 2 else None, 10, setup.logs
    )
    assert ran == ["node_b", "node_a"]
    assert len(setup.outputs()) == len(before) + 2  # one for each job: none left by node_b
    # node_b's actor waits for its node (its resource is nowhere else): its CLI stays up
    assert setup.workers["node_b"].process.poll() is None


def test_a_node_killed_mid_training_resumes_from_its_checkpoint_in_s3(setup: Setup, tmp_path: Path) -> None:
    """node_b, down since the test above, starts again: its actor (waiting for room) is placed
    there and takes a training job, node_a's worker holding back. It parks after step 10, once
    its first checkpoint is in S3; SIGKILL to node_b's raylet. The lease runs out, node_a's
    worker (its own data directory: nothing of the job) resumes the high-noise expert from the
    checkpoint in S3, stores the one pair of LoRAs, and deletes the job's checkpoints."""
    node_b = start_again(setup.cluster, "node_b", CLUSTER_ENV, str(HOOKS))
    (node_b.hooks / "park-train-step").write_text(str(FIRST_CHECKPOINT))
    zip_path = make_dataset_zip(
        tmp_path / "d.zip", {"clips/a.mp4": "p3r5on waves"}, frames=17, width=48, height=32
    )
    hold = setup.cluster.nodes["node_a"].hooks / "hold-claims"
    hold.touch()  # node_a's worker claims nothing until node_b's has the job
    try:
        with setup.server.client() as c:
            body = {"data": setup.server.upload(zip_path), "steps": 50, "lora_rank": 4}
            resp = c.post(f"/api/v3/{TRAINER}", json=body)
        assert resp.status_code == 200, resp.text
        job = str(resp.json()["data"]["id"])
        parked_pid = int(
            poll(
                "node_b's worker parked mid-training",
                lambda: _read(node_b.hooks / "parked-train"),
                120,
                setup.logs,
            )
        )
        [parked_job] = [w["current_job"] for w in setup.server.health()["workers"] if w["pid"] == parked_pid]
        assert parked_job == job
        # StoredCheckpoints.key: the expert and the first 16 hex digits of the ZIP's sha256
        data_sha = hashlib.sha256(zip_path.read_bytes()).hexdigest()[:16]
        assert setup.keys(f"jobs/{job}/") == [f"jobs/{job}/checkpoints/high_noise-{data_sha}.pt"]
    finally:
        hold.unlink()
    os.kill(node_b.raylet_pid(), signal.SIGKILL)
    data = setup.server.wait_for(job, timeout_s=180)
    assert (data["status"], data["attempts"]) == ("completed", 2), data
    training = data["result"]["training"]
    assert (training["high_noise"]["resumed_from"], training["low_noise"]["resumed_from"]) == (
        FIRST_CHECKPOINT,
        0,
    ), training
    with setup.server.client() as c:
        logs = c.get(f"/api/v3/predictions/{job}").json()["data"]["logs"]
    assert f"resuming high_noise at step {FIRST_CHECKPOINT} from its checkpoint in storage" in logs
    ran = poll(
        "both attempts logged", lambda: r if len(r := setup.ran_on(job)) == 2 else None, 10, setup.logs
    )
    assert ran == ["node_b", "node_a"]
    # one output set: the two LoRAs of node_a's attempt (node_b's stored none), and no checkpoint
    result = data["result"]
    assert data["outputs"] == [result["high_noise_lora"], result["low_noise_lora"]]
    loras = [key for key in setup.keys("outputs/") if key.endswith(".safetensors")]
    assert loras == sorted(url.split("/files/", 1)[1] for url in data["outputs"])
    assert setup.keys(f"jobs/{job}/") == []


def test_a_killed_actor_is_restarted_by_ray_and_sigterm_releases_its_job(setup: Setup, image: Path) -> None:
    """SIGKILL to node_a's actor: Ray restarts it (a new worker, ready again). Then SIGTERM to
    its CLI while that worker runs a job: the actor stops, the job goes back to the queue (the
    attempt not counted), and the CLI exits 0."""

    def node_a_worker() -> dict[str, Any] | None:
        return next((w for w in setup.ready_workers() if setup.node(w["id"]) == "node_a"), None)

    cli = setup.workers["node_a"]
    first = poll("node_a's worker ready", node_a_worker, 60, setup.logs)
    os.kill(first["pid"], signal.SIGKILL)
    second = poll(
        "node_a's worker restarted",
        lambda: w if (w := node_a_worker()) and w["id"] != first["id"] else None,
        90,
        setup.logs,
    )
    assert second["pid"] != first["pid"]
    restarted = poll("the restart logged", lambda: RESTARTED.search(cli.text()), 30, setup.logs)
    assert restarted.groups() == ("1", second["id"])

    hooks = setup.cluster.nodes["node_a"].hooks
    (hooks / "park-step").write_text("1")
    job = setup.submit(setup.server.upload(image), 50)
    assert (
        int(poll("node_a's worker parked", lambda: _read(hooks / "parked"), 120, setup.logs)) == second["pid"]
    )
    cli.process.send_signal(signal.SIGTERM)
    poll(
        "the actor told to stop",
        lambda: f"worker actor {second['id']}: stopping" in cli.text(),
        30,
        setup.logs,
    )
    (hooks / "resume").touch()  # the parked step ends; the next one sees the shutdown
    assert cli.process.wait(timeout=60) == 0, cli.text()
    assert "stopped 1 worker actor(s)" in cli.text()
    with setup.server.client() as c:
        data = c.get(f"/api/v3/predictions/{job}/result").json()["data"]
    assert (data["status"], data["attempts"], data["outputs"]) == ("created", 0, []), data
    assert not _alive(second["pid"])


def test_restarts_are_bounded(setup: Setup) -> None:
    """A new CLI on node_a, `--max-restarts 1`: its actor killed twice (while it loads the
    model) is restarted once, then given up for good; with no actor left the CLI exits 1."""
    cli = setup.workers["node_a"] = _start_workers(
        setup.cluster.address, "node_a", setup.cluster.root, setup.env
    )
    started = poll("the actor's worker logged", lambda: STARTED.search(cli.text()), 60, setup.logs)
    os.kill(_pid_of(started[1]), signal.SIGKILL)
    restarted = poll("the restart logged", lambda: RESTARTED.search(cli.text()), 60, setup.logs)
    assert restarted[1] == "1" and restarted[2] != started[1]
    os.kill(_pid_of(restarted[2]), signal.SIGKILL)  # its one restart (--max-restarts 1) is spent
    assert cli.process.wait(timeout=60) == 1, cli.text()
    assert f"worker actor 0 died for good after 1 restart(s) (--max-restarts {MAX_RESTARTS})" in cli.text()
    assert "every worker actor died for good" in cli.text()


def test_actors_end_with_a_killed_cli(setup: Setup) -> None:
    """The actors belong to the CLI's Ray job: SIGKILL to the CLI, and Ray ends them (none is
    left running jobs unsupervised; their jobs' leases run out)."""
    cli = setup.workers["node_a"] = _start_workers(
        setup.cluster.address, "node_a", setup.cluster.root, setup.env
    )
    started = poll("the actor's worker logged", lambda: STARTED.search(cli.text()), 60, setup.logs)
    actor_pid = _pid_of(started[1])
    assert _alive(actor_pid)
    cli.process.kill()
    assert cli.process.wait(timeout=10) == -signal.SIGKILL
    poll("the actor ended by Ray", lambda: not _alive(actor_pid), 30, setup.logs)


STARTED = re.compile(r"worker actor 0: worker (\S+) on node")
RESTARTED = re.compile(r"worker actor 0 restarted by Ray \(restart (\d+)\): worker (\S+)")


def _pid_of(worker_id: str) -> int:
    """`<host>-<pid>-ray<node>-<random>` -> pid."""
    match = re.search(r"-(\d+)-ray[0-9a-f]{8}-[0-9a-f]{4}$", worker_id)
    assert match, worker_id
    return int(match[1])


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and not stat.read_text().split(") ", 1)[1].startswith("Z")
