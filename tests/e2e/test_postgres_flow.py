"""The whole service on PostgreSQL instead of the embedded SQLite (skipped without a server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import wavespeed

from tests.e2e.server import running_server
from tests.e2e.video import decode_mp4

pytestmark = pytest.mark.slow


def test_generate_on_postgres(tmp_path: Path, postgres_url: str, image_16x9: Path) -> None:
    from wanforge.store.migrate import upgrade

    upgrade(postgres_url)  # the server migrates too; doing it first checks idempotence
    with running_server(tmp_path, WANFORGE_DATABASE_URL=postgres_url) as server:
        client = wavespeed.Client(api_key=server.api_key, base_url=server.base_url)
        out = client.run(
            "alibaba/wan-2.2/i2v-plus-480p",
            {"image": client.upload(str(image_16x9)), "prompt": "x"},
            timeout=180,
        )
        video = decode_mp4(httpx.get(out["outputs"][0], timeout=30).content)
        assert (video.width, video.height, video.frames) == (832, 480, 81)
        assert server.health()["worker"] == "ready"
        assert not (server.data_dir / "wanforge.db").exists()  # nothing went to SQLite
