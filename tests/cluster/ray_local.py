"""A real two-node Ray cluster on this machine, for tests: two `ray start --block` processes.

Each node is its own `ray start` (the head with `--head`, the other with `--address`), with one
CPU, a small object store, no dashboard UI, its own custom resource (`node_a`, `node_b`) and its
own ports. Every process of the cluster inherits `MARKER_ENV=<the cluster's folder>`, so
`leftovers()` finds whatever outlived a stop (and `stop()` kills it): no test leaves a process
behind, whatever state it ends in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.server import free_port

MARKER_ENV = "WANFORGE_TEST_RAY_CLUSTER"
# the `ray` command of this Python's environment (a venv's bin/), else the one on PATH
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray") or "ray"
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB


@dataclass
class RayNode:
    name: str  # also the node's custom resource: actors can be placed with {"<name>": 1}
    process: subprocess.Popen[bytes]
    log_path: Path
    hooks: Path  # this node's WANFORGE_TEST_HOOKS folder (tests/e2e/hooks/sitecustomize.py)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def children(self) -> dict[int, str]:
        """The node's processes started by `ray start` (raylet, gcs_server, ...): pid -> name."""
        found: dict[int, str] = {}
        for pid in _pids():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                name, rest = stat.split("(", 1)[1].rsplit(")", 1)
                if int(rest.split()[1]) == self.process.pid:
                    found[pid] = name
        return found

    def raylet_pid(self) -> int:
        [pid] = [p for p, name in self.children().items() if name == "raylet"]
        return pid


@dataclass
class RayCluster:
    address: str
    root: Path
    nodes: dict[str, RayNode] = field(default_factory=dict)

    def logs(self) -> str:
        return "\n".join(f"--- node {n.name}\n{n.log()}" for n in self.nodes.values())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def leftovers(root: Path) -> list[int]:
    """Processes (other than this one) whose environment carries the cluster's marker."""
    needle = f"{MARKER_ENV}={root}".encode()
    found = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
    return found


def _start_node(
    cluster: RayCluster, name: str, head: bool, env: Mapping[str, str], hooks_path: str
) -> RayNode:
    hooks = cluster.root / f"hooks-{name}"
    hooks.mkdir(exist_ok=True)  # a node started again keeps its hooks folder
    starts = len(list(cluster.root.glob(f"ray-{name}*.log")))
    log_path = cluster.root / (f"ray-{name}.log" if not starts else f"ray-{name}-{starts + 1}.log")
    args = [
        RAY,
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        "--num-gpus=0",
        f'--resources={{"{name}": 4}}',
        f"--object-store-memory={OBJECT_STORE_BYTES}",
        "--disable-usage-stats",
        # each node its own ports: two nodes share this host
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]
    if head:
        port = int(cluster.address.rpartition(":")[2])
        args += [
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            f"--temp-dir={cluster.root / 'ray'}",
        ]
    else:
        args += [f"--address={cluster.address}"]
    node_env = {
        **os.environ,
        **env,
        MARKER_ENV: str(cluster.root),
        "WANFORGE_TEST_HOOKS": str(hooks),
        # the hooks (sitecustomize.py) first: Ray's worker processes inherit the raylet's environment
        "PYTHONPATH": os.pathsep.join(p for p in (hooks_path, os.environ.get("PYTHONPATH", "")) if p),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args, env=node_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    node = RayNode(name, process, log_path, hooks)
    cluster.nodes[name] = node
    return node


def _wait_started(node: RayNode, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"ray start for {node.name} exited:\n{node.log()}")
        if "block forever" in node.log():  # `ray start --block` is up and watching its processes
            return
        time.sleep(0.1)
    raise TimeoutError(f"node {node.name} not up in {timeout_s}s:\n{node.log()}")


def stop(cluster: RayCluster, grace_s: float = 20.0) -> list[int]:
    """SIGTERM each node (Ray drains and stops its processes), then SIGKILL what is left; the
    pids that had to be killed."""
    for node in reversed(cluster.nodes.values()):  # the head last
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for node in cluster.nodes.values():
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait()
    while (left := leftovers(cluster.root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def start_again(cluster: RayCluster, name: str, env: Mapping[str, str], hooks_path: str) -> RayNode:
    """A new `ray start --address` for the worker node `name`, after its processes died (its
    raylet killed): a new Ray node with the same custom resource, so actors pinned to `name`
    and waiting for room are placed there again."""
    old = cluster.nodes[name]
    old.process.wait(timeout=30)  # `ray start --block` exits once one of its processes died
    node = _start_node(cluster, name, False, env, hooks_path)
    _wait_started(node, 60)
    return node


@contextmanager
def two_node_cluster(
    root: Path, hooks_path: str, env: Mapping[str, str], *, then: Callable[[RayCluster], None] | None = None
) -> Iterator[RayCluster]:
    """`node_a` (the head) and `node_b`, both up; stopped (and nothing left) afterwards.
    `then(cluster)` runs once the head is up, while `node_b` starts (to overlap slow starts)."""
    cluster = RayCluster(f"127.0.0.1:{free_port()}", root)
    try:
        _wait_started(_start_node(cluster, "node_a", True, env, hooks_path), 60)
        node_b = _start_node(cluster, "node_b", False, env, hooks_path)
        if then is not None:
            then(cluster)
        _wait_started(node_b, 60)
        yield cluster
    finally:
        stop(cluster)
