"""Runs worker processes beside the API (the `serve` command) and restarts any that die.

The API process never imports torch; each worker is a fresh `python -m wanforge worker` process
that loads the model itself. A crashed or killed worker's job is picked up again once its lease
expires (by the restarted worker or another one).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("wanforge.supervisor")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
# a supervised worker watches this pid and stops when its supervisor is gone
PARENT_ENV = "WANFORGE_SUPERVISOR_PID"


class WorkerSupervisor:
    def __init__(
        self,
        *,
        data_dir: Path,
        database_url: str,
        env: dict[str, str] | None = None,
        on_exit: Callable[[int, int], None] | None = None,
    ) -> None:
        """`on_exit(pid, returncode)` runs when a worker process is seen to have exited."""
        self.command = [
            sys.executable,
            "-m",
            "wanforge",
            "worker",
            "--data-dir",
            str(data_dir),
        ]
        # OpenMP threads that busy-wait make a CPU worker 10-50x slower when cores are shared
        self.env = {
            "OMP_WAIT_POLICY": "PASSIVE",
            **os.environ,
            **(env or {}),
            # in the environment, not on the command line: `ps` shows arguments to every user
            "WANFORGE_DATABASE_URL": database_url,
            PARENT_ENV: str(os.getpid()),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._spawned_at = 0.0
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env)
        self._spawned_at = time.monotonic()
        log.info("started worker process %d", self.process.pid)

    def _watch(self) -> None:
        failures = 0
        while not self._stop.is_set():
            proc = self.process
            if proc is not None and proc.poll() is not None:
                if self._stop.is_set():
                    return
                if self._on_exit is not None:
                    try:
                        self._on_exit(proc.pid, proc.returncode)
                    except Exception:
                        log.exception("on_exit callback failed")
                failures = 0 if time.monotonic() - self._spawned_at > 30 else failures + 1
                delay = RESTART_BACKOFF_S[min(failures - 1, len(RESTART_BACKOFF_S) - 1)] if failures else 0.2
                log.warning(
                    "worker process %d exited with %s; restarting in %.1fs", proc.pid, proc.returncode, delay
                )
                if self._stop.wait(delay):
                    return
                self._spawn()
                self.restarts += 1
            self._stop.wait(0.2)

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
