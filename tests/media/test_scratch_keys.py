"""A job's scratch keys (`jobs/<id>/...`): fixed, confined to the job's folder, pruned, never served."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.s3 import S3Endpoint
from wanforge.api.app import create_app
from wanforge.config import Settings
from wanforge.media.errors import MediaError
from wanforge.media.keys import is_scratch_key, job_scratch_key
from wanforge.media.storage import LocalStorage, Storage
from wanforge.media.storage_s3 import S3Storage
from wanforge.store.db import Database

JOB = "0123456789abcdef0123456789abcdef"


def test_scratch_keys_are_fixed_and_confined_to_the_job() -> None:
    key = job_scratch_key(JOB, "checkpoints", "high_noise-0123456789abcdef.pt")
    assert key == f"jobs/{JOB}/checkpoints/high_noise-0123456789abcdef.pt"
    assert is_scratch_key(key) and not is_scratch_key("outputs/t/a.mp4")
    for job, parts in (
        ("..", ("x",)),
        (JOB, ("../other", "x")),
        (f"{JOB}/other", ("x",)),
        (JOB, ("a/b",)),
        (JOB, (".hidden",)),
        ("", ("x",)),
    ):
        with pytest.raises(MediaError, match="is not one safe key segment"):
            job_scratch_key(job, *parts)


def test_deleting_the_last_scratch_file_prunes_the_job_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    keys = [job_scratch_key(JOB, "checkpoints", f"{e}.pt") for e in ("high_noise", "low_noise")]
    for key in keys:
        storage.put_bytes(key, b"x")
    assert storage.delete(keys[0])
    assert (tmp_path / "files" / "jobs" / JOB / "checkpoints").is_dir()  # one file left in it
    assert storage.delete(keys[1])
    assert not (tmp_path / "files" / "jobs" / JOB).exists()
    assert (tmp_path / "files" / "jobs").is_dir()  # the top-level folder stays


def test_scratch_is_never_served(settings: Settings, db: Database) -> None:
    client = TestClient(create_app(settings, db))
    storage = LocalStorage(settings.storage_dir)
    key = job_scratch_key(JOB, "checkpoints", "high_noise.pt")
    storage.put_bytes(key, b"checkpoint")
    resp = client.get(f"/files/{key}")
    assert (resp.status_code, resp.json()["message"]) == (404, "file not found")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_list_keys_gives_the_keys_under_a_folder(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    storage: Storage
    if kind == "local":
        storage = LocalStorage(tmp_path / "files")
    else:
        request.getfixturevalue("s3_env")
        endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
        storage = S3Storage(endpoint.new_bucket(), "team/a", endpoint_url=endpoint.url, region="us-east-1")
    keys = [job_scratch_key(JOB, "checkpoints", f"{e}.pt") for e in ("high_noise", "low_noise")]
    for key in [*keys, "jobsx/a/b.pt", "outputs/t/a.mp4"]:
        storage.put_bytes(key, b"x")
    if isinstance(storage, LocalStorage):  # an unfinished write is no key
        (storage.path(keys[0]).parent / ".low_noise.pt.0123456789ab.tmp").write_bytes(b"x")
    assert sorted(storage.list_keys("jobs")) == keys
    assert list(storage.list_keys(f"jobs/{'f' * 32}")) == []
    with pytest.raises(MediaError):
        list(storage.list_keys("../x"))
