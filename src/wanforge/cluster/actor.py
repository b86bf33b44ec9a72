"""The worker actor: one `WorkerLoop` in a Ray actor process, on whichever node Ray placed it.

The loop runs in a thread started by `__init__`, so an actor that Ray restarts (a fresh process,
`__init__` again with the same settings) goes back to work by itself, and the actor still answers
`info()` and `stop()` while a job runs. The worker id names the Ray node (`...-ray<node id>`), so
the store's lease owners and /health tell the nodes apart.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass

import ray

from wanforge.config import Settings
from wanforge.logs import configure_logging
from wanforge.store.db import Database, PoolLimits
from wanforge.store.workers import host_label
from wanforge.worker.loop import WorkerLoop

log = logging.getLogger("wanforge.cluster")

NODE_ID_CHARS = 8  # of Ray's 56 hex digits: enough to tell a cluster's nodes apart


def ray_worker_id(node_id: str, pid: int) -> str:
    """`<host>-<pid>-ray<node>-<random>`: at most 57 characters (the store keeps 64)."""
    return f"{host_label()[:32]}-{pid}-ray{node_id[:NODE_ID_CHARS]}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class ActorInfo:
    """What the supervising CLI learns from an actor: a new `worker_id` means Ray restarted it."""

    worker_id: str
    node_id: str
    pid: int
    running: bool


class WorkerActor:
    """Wrapped by `ray.remote` with the placement's options (see `supervisor.RayWorkers`)."""

    def __init__(self, settings: Settings) -> None:
        configure_logging(settings.log_format)
        self.node_id = ray.get_runtime_context().get_node_id()
        db = Database(settings.resolved_database_url(), PoolLimits.from_settings(settings, worker=True))
        self.loop = WorkerLoop(settings, db, worker_id=ray_worker_id(self.node_id, os.getpid()))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-loop", daemon=True)
        self.thread.start()
        log.info("worker actor %s started on Ray node %s", self.loop.worker_id, self.node_id)

    def _run(self) -> None:
        try:
            self.loop.run_forever()
        except BaseException:
            log.exception("worker actor %s: its loop failed", self.loop.worker_id)
            # a worker whose loop is gone holds its GPU for nothing: exit so Ray restarts it
            # (counted against max_restarts); an actor that was told to stop just ends
            if not self.stopped.is_set():
                os._exit(1)

    def info(self) -> ActorInfo:
        return ActorInfo(self.loop.worker_id, self.node_id, os.getpid(), self.thread.is_alive())

    def stop(self, timeout_s: float) -> bool:
        """Stop claiming; a running job is released (it runs again elsewhere, its attempt not
        counted). True when the loop ended within `timeout_s`."""
        log.info("worker actor %s: stopping (a running job is released)", self.loop.worker_id)
        self.stopped.set()
        self.loop.shutdown.set()
        self.thread.join(timeout_s)
        return not self.thread.is_alive()
