"""The `wanforge workers --ray` process: starts the worker actors, watches them, stops them.

Ray restarts a dead actor by itself (up to `max_restarts`); this process only notices it (a new
worker id from `info()`) and logs it, logs an actor that died for good, and on SIGTERM/SIGINT
asks every actor to stop (releasing its job) before killing it. The actors belong to this
process's Ray job: if it is killed, Ray ends them too, and their jobs' leases run out.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError

from wanforge.cluster.actor import ActorInfo, WorkerActor
from wanforge.cluster.placement import Placement
from wanforge.config import Settings

log = logging.getLogger("wanforge.cluster")

SILENT_S = 30.0  # an actor that has not answered this long is said to be waiting (once)


@dataclass
class Tracked:
    """One worker actor as the supervisor sees it."""

    index: int
    handle: Any  # ray.actor.ActorHandle: untyped
    info: ActorInfo | None = None
    pending: Any = None  # the ObjectRef of the info() call in flight
    asked_at: float = 0.0
    restarts: int = 0
    down: bool = False
    dead: bool = False


def connect(address: str) -> None:
    """Join the cluster as this process's Ray job (its actors end when this process does)."""
    ray.init(address=address, logging_level=logging.WARNING)


def disconnect() -> None:
    ray.shutdown()


def cluster_resources() -> dict[str, float]:
    """What the cluster has in all (`{"CPU": 16.0, "GPU": 8.0, ...}`), as Ray reports it."""
    return dict(ray.cluster_resources())  # type: ignore[no-untyped-call]


class RayWorkers:
    """`placement.count` worker actors, each running `WorkerLoop(settings)` on its node."""

    def __init__(self, settings: Settings, placement: Placement) -> None:
        self.settings = settings
        self.placement = placement
        self.actors: list[Tracked] = []

    def start(self) -> None:
        remote = ray.remote(WorkerActor).options(**self.placement.actor_options())
        self.actors = [Tracked(i, remote.remote(self.settings)) for i in range(self.placement.count)]
        log.info(
            "started %d worker actor(s): %g GPU, %g CPU%s each, at most %d restart(s)",
            self.placement.count,
            self.placement.num_gpus,
            self.placement.num_cpus,
            f", resources {self.placement.resources}" if self.placement.resources else "",
            self.placement.max_restarts,
        )

    @property
    def alive(self) -> list[Tracked]:
        return [t for t in self.actors if not t.dead]

    def check(self, now: float | None = None) -> int:
        """Ask each actor for its info (one call in flight each) and log what changed; the
        number of actors not dead for good."""
        now = time.monotonic() if now is None else now
        for t in self.alive:
            if t.pending is None:
                t.pending, t.asked_at = t.handle.info.remote(), now
            ready, _ = ray.wait([t.pending], timeout=0)
            if ready:
                ref, t.pending = t.pending, None
                self._answer(t, ref)
            elif now - t.asked_at > SILENT_S and not t.down:
                t.down = True
                log.warning(
                    "worker actor %d: no answer for %.0f s (loading, restarting, or waiting for room "
                    "on the cluster)",
                    t.index,
                    SILENT_S,
                )
        return len(self.alive)

    def _answer(self, t: Tracked, ref: Any) -> None:
        try:
            info: ActorInfo = ray.get(ref)
        except ActorDiedError as exc:
            t.dead = True
            log.error(
                "worker actor %d died for good after %d restart(s) (--max-restarts %d): %s",
                t.index,
                t.restarts,
                self.placement.max_restarts,
                str(exc).splitlines()[0],
            )
            return
        except RayActorError:  # unavailable for now: Ray is restarting it
            if not t.down:
                log.warning("worker actor %d is down; Ray restarts it", t.index)
            t.down = True
            return
        if t.info is not None and info.worker_id != t.info.worker_id:
            t.restarts += 1
            log.warning(
                "worker actor %d restarted by Ray (restart %d): worker %s on node %s",
                t.index,
                t.restarts,
                info.worker_id,
                info.node_id,
            )
        elif t.info is None:
            log.info("worker actor %d: worker %s on node %s", t.index, info.worker_id, info.node_id)
        t.info, t.down = info, False

    def watch(self, stop: threading.Event, interval_s: float = 1.0) -> int:
        """Until `stop` is set (0) or every actor died for good (1)."""
        while not stop.wait(interval_s):
            if self.check() == 0:
                log.error("every worker actor died for good")
                return 1
        return 0

    def stop(self, timeout_s: float) -> None:
        """Ask every actor that answers to stop (each releases its job), then kill them all
        (one down or waiting for room would only answer once Ray restarted it)."""
        answering = [t for t in self.alive if t.info is not None and not t.down]
        asks = [t.handle.stop.remote(timeout_s) for t in answering]
        if asks:
            done, _ = ray.wait(asks, num_returns=len(asks), timeout=timeout_s + 5)
            for t, ask in zip(answering, asks, strict=True):
                if ask not in done:
                    log.warning("worker actor %d: no answer to stop within %.0f s", t.index, timeout_s + 5)
        for t in self.actors:
            try:
                ray.kill(t.handle, no_restart=True)
            except Exception:  # already gone
                log.debug("worker actor %d: kill failed", t.index, exc_info=True)
        log.info("stopped %d worker actor(s)", len(self.actors))
