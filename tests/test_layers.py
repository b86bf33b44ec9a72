"""Layers point down: api -> store/worker -> engine/training -> media; webhooks beside the API,
signing below the store; the trainer never reaches for the demo model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import wanforge

SRC = Path(wanforge.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute `import x` and `from x import y` forms)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _offending(files: list[Path], forbidden: str) -> dict[str, list[str]]:
    hits = {
        str(path.relative_to(SRC)): sorted(
            name for name in _imports(path) if name == forbidden or name.startswith(forbidden + ".")
        )
        for path in files
    }
    return {path: names for path, names in hits.items() if names}


# (lower layer, a layer above it that it must not import)
_BELOW = [
    (low, high)
    for low, highs in {
        "media": ("api", "store", "worker", "engine", "training", "webhooks"),
        "engine": ("api", "store", "worker", "training", "webhooks"),
        "training": ("api", "store", "worker", "webhooks"),
    }.items()
    for high in highs
]


@pytest.mark.parametrize(
    ("files", "forbidden"),
    [
        (sorted((SRC / "webhooks").glob("*.py")), "wanforge.api"),
        ([SRC / "webhooks" / "signing.py"], "wanforge.store"),
        (sorted((SRC / "store").glob("*.py")), "wanforge.webhooks"),
        (sorted((SRC / "store").glob("*.py")), "wanforge.api"),
        (sorted((SRC / "store").glob("*.py")), "wanforge.worker"),
        (sorted((SRC / "training").glob("*.py")), "wanforge.engine.demo"),
        *[(sorted((SRC / low).rglob("*.py")), f"wanforge.{high}") for low, high in _BELOW],
    ],
    ids=[
        "webhooks-not-api",
        "signing-not-store",
        "store-not-webhooks",
        "store-not-api",
        "store-not-worker",
        "training-not-demo",
        *[f"{low}-not-{high}" for low, high in _BELOW],
    ],
)
def test_layers_point_down(files: list[Path], forbidden: str) -> None:
    assert files
    assert _offending(files, forbidden) == {}


def test_prediction_wire_form_is_not_in_the_api() -> None:
    from wanforge.api import wire

    for name in (
        "PredictionOut",
        "PredictionEnvelope",
        "Timings",
        "Urls",
        "prediction_out",
        "iso",
        "file_url",
    ):
        assert not hasattr(wire, name), name


def test_the_trainer_never_loads_the_demo_model_module() -> None:
    """Not even through the engine's loader: a real training run has no use for it."""
    code = (
        "import sys, wanforge.training.job, wanforge.training.run, wanforge.engine.loading; "
        "print('wanforge.engine.demo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_only_the_cli_imports_the_cluster_package() -> None:
    """`wanforge.cluster` (Ray worker actors) sits beside the worker: the CLI starts it, nothing
    else (the API least of all) imports it, and nothing outside it imports ray."""
    outside = [p for p in sorted(SRC.rglob("*.py")) if "cluster" not in p.relative_to(SRC).parts]
    assert _offending([p for p in outside if p.name != "cli.py"], "wanforge.cluster") == {}
    assert _offending(outside, "ray") == {}


def test_the_cluster_package_stays_beside_the_worker() -> None:
    files = sorted((SRC / "cluster").glob("*.py"))
    assert files
    for forbidden in ("wanforge.api", "wanforge.webhooks", "wanforge.cli", "torch"):
        assert _offending(files, forbidden) == {}, forbidden
