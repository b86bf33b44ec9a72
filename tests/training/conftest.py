"""Fixtures for the training-data tests: synthetic clips and a tree snapshot for escape checks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.synthetic import make_clip


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and do not stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def clip(tmp_path: Path) -> Callable[..., Path]:
    """``clip("a.mp4", fps=30, frames=60, ...)`` writes a synthetic clip under ``tmp_path/src``."""

    def factory(name: str, **options: Any) -> Path:
        return make_clip(tmp_path / "src" / name, **options)

    return factory


def tree(root: Path, exclude: Path | None = None) -> set[str]:
    """Every path under ``root`` (files and folders), relative, skipping ``exclude``'s subtree."""
    found = set()
    for path in root.rglob("*"):
        if exclude is not None and (path == exclude or exclude in path.parents):
            continue
        found.add(str(path.relative_to(root)))
    return found


@pytest.fixture
def snapshot() -> Callable[[Path, Path | None], set[str]]:
    return tree
