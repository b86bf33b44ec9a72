"""`wanforge serve`: the API alone (`--no-workers`), or with worker processes pinned to GPUs.

The server and the supervisors are replaced by recorders: what is checked is what `serve` asks
them to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from wanforge.cli import app

runner = CliRunner()


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What serve started: the env of each supervisor, and whether the API ran."""
    seen: dict[str, Any] = {"workers": [], "served": False}

    class FakeSupervisor:
        def __init__(self, **kwargs: Any) -> None:
            seen["workers"].append(kwargs["env"])

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    def fake_run_server(app_: Any, settings: Any) -> None:
        seen["served"] = True

    monkeypatch.setattr("wanforge.worker.supervisor.WorkerSupervisor", FakeSupervisor)
    monkeypatch.setattr("wanforge.api.app.run_server", fake_run_server)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return seen


def _serve(tmp_path: Path, *args: str) -> Any:
    return runner.invoke(app, ["serve", "--data-dir", str(tmp_path / "d"), *args])


def test_no_workers_runs_the_api_alone(tmp_path: Path, started: dict[str, Any]) -> None:
    result = _serve(tmp_path, "--no-workers")
    assert result.exit_code == 0, result.output
    assert started == {"workers": [], "served": True}


def test_no_workers_conflicts_with_a_worker_count(tmp_path: Path, started: dict[str, Any]) -> None:
    result = _serve(tmp_path, "--no-workers", "--workers", "2")
    assert result.exit_code == 2
    assert "contradict" in result.output
    assert started == {"workers": [], "served": False}


def test_workers_are_pinned_one_per_gpu(
    tmp_path: Path, started: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wanforge.worker.gpus.nvidia_smi_list", lambda: "GPU 0: A\nGPU 1: B\n")
    result = _serve(tmp_path, "--workers", "3")
    assert result.exit_code == 0, result.output
    assert [env.get("CUDA_VISIBLE_DEVICES") for env in started["workers"]] == ["0", "1", "0"]


def test_one_gpu_is_not_pinned(
    tmp_path: Path, started: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wanforge.worker.gpus.nvidia_smi_list", lambda: "GPU 0: A\n")
    result = _serve(tmp_path)
    assert result.exit_code == 0, result.output
    assert [("CUDA_VISIBLE_DEVICES" in env) for env in started["workers"]] == [False]
