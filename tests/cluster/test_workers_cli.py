"""`wanforge workers --ray`: the errors it stops with before touching a cluster (exit code 2)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wanforge.cli import app

runner = CliRunner()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_without_ray_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ModuleNotFoundError
    for name in [m for m in sys.modules if m.startswith("wanforge.cluster")]:
        monkeypatch.delitem(sys.modules, name)
    result = runner.invoke(app, ["workers", "--ray", "127.0.0.1:6379", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: ray is not installed: pip install 'wanforge[ray]' (Ray 2.40 or later)" in result.output


def test_an_unreachable_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'wanforge[ray]')")
    port = _closed_port()
    result = runner.invoke(app, ["workers", "--ray", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"error: --ray: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused" in (
        result.output
    )
    assert not (tmp_path / "wanforge.db").exists()  # stopped before opening the store


@pytest.mark.parametrize("address", ["head-node", "10.0.0.1:gcs", ":6379"])
def test_an_address_without_a_port(tmp_path: Path, address: str) -> None:
    pytest.importorskip("ray", reason="ray is not installed (pip install 'wanforge[ray]')")
    result = runner.invoke(app, ["workers", "--ray", address, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert (
        f"error: --ray: expected HOST:PORT of the head node's GCS (ray start --head --port), got {address!r}"
        in (result.output.replace("\n", ""))
    )
