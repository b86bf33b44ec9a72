"""`GET /health`: readiness for anyone, worker details only for a keyed caller; staleness from settings."""

from __future__ import annotations

import os
from datetime import timedelta

from fastapi.testclient import TestClient

from wanforge.api.routes_health import worker_label
from wanforge.config import Settings
from wanforge.store import jobs
from wanforge.store.db import Database, utcnow
from wanforge.store.keys import KeyOptions, create_key
from wanforge.store.tables import Worker
from wanforge.store.workers import report_state
from wanforge.vocabulary import WorkerState


def _age(db: Database, worker_id: str, seconds: float) -> None:
    with db.session() as s:
        row = s.get(Worker, worker_id)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(seconds=seconds)


def test_public_health_names_no_host_pid_or_job(client: TestClient, db: Database) -> None:
    report_state(db, "host-a-4242-abcdef", WorkerState.READY, model="demo", job="job123")
    body = client.get("/health").json()
    assert set(body) == {"status", "version", "worker", "content_checker", "attention_backend"}
    assert body["status"] == "ok" and body["worker"] == "ready"
    assert "host-a" not in str(body) and "4242" not in str(body) and "job123" not in str(body)


def test_admin_health_lists_workers(client: TestClient, db: Database) -> None:
    auth = {"Authorization": f"Bearer {create_key(db, 'ops', KeyOptions(is_admin=True))[0]}"}
    report_state(db, "host-a-4242-abcdef", WorkerState.READY, model="demo", job="job123")
    body = client.get("/health", headers=auth).json()
    assert body["worker"] == "ready" and body["model"] == "demo"
    [worker] = body["workers"]
    assert worker["id"] == "host-a-4242-abcdef" and worker["current_job"] == "job123"
    assert worker["state"] == "ready" and worker["pid"] == os.getpid()
    # a wrong key gets the public answer (still 200: load balancers probe without keys)
    bad = client.get("/health", headers={"Authorization": "Bearer wf_nope"})
    assert bad.status_code == 200 and set(bad.json()) == {
        "status",
        "version",
        "worker",
        "content_checker",
        "attention_backend",
    }


def test_keyed_health_names_the_model_not_its_server_path(
    client: TestClient, db: Database, settings: Settings, auth: dict[str, str]
) -> None:
    settings.model = "/srv/models/Wan2.2-I2V-A14B-Diffusers/"
    report_state(db, "host-a-4242-abcdef", WorkerState.LOADING, model=settings.model)
    body = client.get("/health", headers=auth).json()
    assert body["model"] == "Wan2.2-I2V-A14B-Diffusers"
    assert body["workers"][0]["model"] == "Wan2.2-I2V-A14B-Diffusers"
    assert "/srv" not in str(body)


def test_a_loading_worker_is_not_stale_within_the_derived_window(
    client: TestClient, db: Database, settings: Settings
) -> None:
    # a 14B load reports every worker_touch_s; a busy worker with each heartbeat (lease_s / 3)
    settings.lease_s = 120.0
    assert settings.worker_stale_s == 240.0
    report_state(db, "w-loading", WorkerState.LOADING, model="demo")
    _age(db, "w-loading", 60)  # older than the old fixed 30 s
    assert client.get("/health").json()["worker"] == "loading"
    _age(db, "w-loading", 241)
    assert client.get("/health").json()["worker"] == "no_worker"


def test_health_names_the_content_checker(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    assert client.get("/health").json()["content_checker"] == "opennsfw"  # the default
    keyed = client.get("/health", headers=auth).json()
    assert keyed["content_checker"] == "opennsfw"
    assert keyed["content_safety"] == {
        "checker": "opennsfw",
        "policy": "flag",
        "threshold": 0.8,
        "check_input": False,
    }
    assert keyed["prompt_expansion"] == {"configured": False, "model": None, "vision": False}
    settings.content_checker = "none"
    settings.prompt_expansion_url = "http://10.0.0.5:8080/v1"
    settings.prompt_expansion_model = "qwen2.5-vl"
    settings.prompt_expansion_vision = True
    assert client.get("/health").json()["content_checker"] == "none"
    keyed = client.get("/health", headers=auth).json()
    assert keyed["content_safety"] == {
        "checker": "none",
        "policy": None,
        "threshold": None,
        "check_input": False,
    }
    assert keyed["prompt_expansion"] == {"configured": True, "model": "qwen2.5-vl", "vision": True}
    assert "10.0.0.5" not in str(keyed)


def test_health_names_the_ready_workers_attention_backend(
    client: TestClient, db: Database, auth: dict[str, str]
) -> None:
    assert client.get("/health").json()["attention_backend"] is None  # no worker ready yet
    report_state(db, "host-a-1-aaaaaa", WorkerState.READY, model="demo", detail="attention_backend=_flash_3")
    assert client.get("/health").json()["attention_backend"] == "_flash_3"
    report_state(db, "host-b-2-bbbbbb", WorkerState.READY, model="demo", detail="attention_backend=native")
    report_state(db, "host-c-3-cccccc", WorkerState.FAILED, model="demo", detail="RuntimeError: no GPU")
    assert client.get("/health").json()["attention_backend"] == "_flash_3, native"
    workers = {w["id"]: w["attention_backend"] for w in client.get("/health", headers=auth).json()["workers"]}
    assert workers == {
        worker_label("host-a-1-aaaaaa"): "_flash_3",
        worker_label("host-b-2-bbbbbb"): "native",
        worker_label("host-c-3-cccccc"): None,
    }


def test_a_keys_health_shows_its_own_running_job_and_no_other_tenants(
    client: TestClient, db: Database, auth: dict[str, str], owner: str
) -> None:
    """Another key's running prediction id, and any worker's host and pid, are not a key's to see."""

    def running(key_id: str, worker: str) -> str:
        pid = jobs.create_prediction(
            db, model="m", kind="generate", input={}, server_base="", max_attempts=3, api_key_id=key_id
        ).id
        report_state(db, worker, WorkerState.READY, model="demo", job=pid)
        return pid

    mine = running(owner, "host-a-4242-abcdef")
    theirs = running(create_key(db, "other")[1].id, "host-b-5151-fedcba")
    body = client.get("/health", headers=auth).json()
    shown = sorted(body["workers"], key=lambda w: w["current_job"] is None)
    assert [w["current_job"] for w in shown] == [mine, None]
    assert [w["pid"] for w in shown] == [None, None]
    assert theirs not in str(body)
    for secret in ("host-a", "host-b", "4242", "5151"):
        assert secret not in str(body), secret
    assert len({w["id"] for w in shown}) == 2  # still told apart, and the same on every call
    assert client.get("/health", headers=auth).json()["workers"] == body["workers"]
