"""The `wanforge` command line: generate, train and keys, in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from tests.samples import png_bytes
from wanforge.cli import app

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--name", "alice", *data])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("wf_")
    listed = runner.invoke(app, ["keys", "list", *data])
    assert "alice" in listed.stdout and key[:8] in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key[:8], *data]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", *data]).stdout
    assert runner.invoke(app, ["keys", "revoke", "nomatch", *data]).exit_code == 1


def test_keys_admin_limits_expiry_and_update(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from wanforge.cli import parse_expiry
    from wanforge.store.db import Database
    from wanforge.store.keys import list_keys

    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(
        app,
        ["keys", "create", "--admin", "--rpm", "60", "--concurrency", "4", "--expires", "2030-01-01", *data],
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    db = Database(f"sqlite:///{tmp_path / 'wanforge.db'}")
    [row] = list_keys(db)
    assert (row.is_admin, row.rpm, row.concurrency, row.expires_at) == (True, 60, 4, datetime(2030, 1, 1))
    listed = runner.invoke(app, ["keys", "list", *data]).stdout
    assert "admin" in listed and "expires 2030-01-01 00:00" in listed and "rpm 60, concurrency 4" in listed
    updated = runner.invoke(
        app,
        ["keys", "update", key[:8], "--rpm", "0", "--concurrency", "default", "--expires", "never", *data],
    )
    assert updated.exit_code == 0, updated.output
    [row] = list_keys(db)
    assert (row.rpm, row.concurrency, row.expires_at) == (0, None, None)
    assert "rpm unlimited, concurrency default" in runner.invoke(app, ["keys", "list", *data]).stdout
    bad = runner.invoke(app, ["keys", "update", key[:8], "--rpm", "lots", *data])
    assert bad.exit_code != 0 and "--rpm" in bad.output
    assert runner.invoke(app, ["keys", "update", "nomatch", "--rpm", "1", *data]).exit_code == 1
    db.dispose()
    now = datetime(2026, 5, 1, 12, 0)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("90m", now) == now + timedelta(minutes=90)
    assert parse_expiry("2026-06-01T12:00:00+02:00", now) == datetime(2026, 6, 1, 10, 0)
    assert parse_expiry("never", now) is None


def test_generate_writes_an_mp4(tmp_path: Path) -> None:
    from wanforge.training.videos import probe_video

    image = tmp_path / "in.png"
    image.write_bytes(png_bytes(160, 90))
    out = tmp_path / "out.mp4"
    result = runner.invoke(
        app, ["generate", str(image), "-p", "waves", "--resolution", "480p", "--seed", "5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    info = probe_video(out)
    assert (info.width, info.height, info.frames, info.fps) == (832, 480, 81, 16)
    assert "seed 5" in result.stdout


@pytest.mark.parametrize(
    ("args", "hint"), [(["--resolution", "4k"], "--resolution"), (["--seed", "-2"], "--seed")]
)
def test_generate_refuses_bad_options(tmp_path: Path, args: list[str], hint: str) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes())
    result = runner.invoke(app, ["generate", str(image), "-p", "x", *args])
    assert result.exit_code != 0 and hint in result.output


def test_train_writes_two_loras(tmp_path: Path) -> None:
    from tests.training.synthetic import make_dataset_zip

    data = make_dataset_zip(tmp_path / "d.zip", {"a.mp4": "a square slides right"}, frames=24)
    out = tmp_path / "loras"
    result = runner.invoke(app, ["train", str(data), "--steps", "50", "--lora-rank", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["p3r5on_high_noise.safetensors", "p3r5on_low_noise.safetensors"]
    with safe_open(str(out / files[0]), "pt") as f:
        assert f.metadata()["expert"] == "high_noise" and f.metadata()["lora_rank"] == "4"


def test_train_refuses_a_hostile_zip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    result = runner.invoke(app, ["train", str(bad), "--steps", "50", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not a ZIP" in result.output


def test_train_refuses_steps_out_of_range(tmp_path: Path) -> None:
    bad = tmp_path / "d.zip"
    bad.write_bytes(b"x")
    result = runner.invoke(app, ["train", str(bad), "--steps", "10"])
    assert result.exit_code != 0 and "--steps" in result.output
