from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import Server, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server")) as srv:
        yield srv


@pytest.fixture
def image_16x9(tmp_path: Path) -> Path:
    from tests.samples import png_bytes

    path = tmp_path / "frame.png"
    path.write_bytes(png_bytes(320, 180, seed=7))
    return path
