"""How many worker actors to start and what each asks Ray for, decided from the flags and what
the cluster reports (`ray.cluster_resources()`). Pure: tested without a cluster."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class PlacementError(ValueError):
    """Flags that cannot place any worker (the message names the flag)."""


@dataclass(frozen=True)
class Placement:
    """`count` actors, each asking for `num_gpus` GPUs, `num_cpus` CPUs and `resources`, each
    restarted by Ray at most `max_restarts` times (-1: without bound)."""

    count: int
    num_gpus: float
    num_cpus: float
    max_restarts: int
    resources: dict[str, float] = field(default_factory=dict)

    def actor_options(self) -> dict[str, Any]:
        """The keyword arguments of Ray's `ActorClass.options` for one worker actor."""
        return {
            "num_gpus": self.num_gpus,
            "num_cpus": self.num_cpus,
            "resources": dict(self.resources),
            "max_restarts": self.max_restarts,
            # a call that was running when the actor died is not sent again: the job it ran lives
            # on in the store (its lease runs out and a worker claims it again)
            "max_task_retries": 0,
        }


def parse_resources(text: str | None) -> dict[str, float]:
    """`--resources '{"node_b": 1}'`: custom Ray resources each actor asks for."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlacementError(f"--resources: not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise PlacementError('--resources: expected a JSON object such as {"node_b": 1}')
    resources: dict[str, float] = {}
    for name, amount in value.items():
        if name in ("CPU", "GPU"):
            raise PlacementError(f"--resources: {name} is set by --cpus-per-worker (and GPU workers)")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 < amount < math.inf:
            raise PlacementError(f"--resources: {name!r} must be a positive number, got {amount!r}")
        resources[name] = float(amount)
    return resources


def plan(
    cluster: Mapping[str, float],
    *,
    count: int | None,
    cpus_per_worker: float | None,
    max_restarts: int,
    resources: Mapping[str, float] | None = None,
    gpus_per_worker: int = 1,
) -> Placement:
    """GPU workers (`gpus_per_worker` GPUs each: 2 for a worker that trains both experts at once)
    unless `cpus_per_worker` is given (CPU-only, for tests and machines without GPUs). Without
    `count`: as many as the cluster's GPUs hold, or for CPU workers as many as its CPUs hold."""
    if max_restarts < -1:
        raise PlacementError("--max-restarts: must be -1 (no bound) or at least 0")
    if gpus_per_worker < 1:
        raise PlacementError("--gpus-per-worker: must be at least 1")
    if cpus_per_worker is not None and gpus_per_worker != 1:
        raise PlacementError("--gpus-per-worker: CPU-only workers (--cpus-per-worker) have no GPU")
    if cpus_per_worker is not None:
        if not (cpus_per_worker > 0 and math.isfinite(cpus_per_worker)):
            raise PlacementError("--cpus-per-worker: must be a finite number more than 0")
        num_gpus, num_cpus = 0.0, cpus_per_worker
        fits = math.floor(cluster.get("CPU", 0.0) / cpus_per_worker)
        what = f"CPUs for --cpus-per-worker {cpus_per_worker:g}"
    else:
        # the loop's own threads need little CPU; the GPU is what one worker owns
        num_gpus, num_cpus = float(gpus_per_worker), 1.0
        fits = math.floor(cluster.get("GPU", 0.0) / gpus_per_worker)
        what = "GPUs" if gpus_per_worker == 1 else f"room for {gpus_per_worker} GPUs per worker"
        what += " (CPU-only workers: --cpus-per-worker)"
    if count is None:
        if fits < 1:
            raise PlacementError(f"--count: the cluster reports no {what}; give --count N")
        count = fits
    if count < 1:
        raise PlacementError("--count: must be at least 1")
    return Placement(count, num_gpus, num_cpus, max_restarts, dict(resources or {}))
