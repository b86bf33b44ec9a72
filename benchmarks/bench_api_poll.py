"""Result polls per second of one API process: `wrk` against `GET /api/v3/predictions/{id}/result`.

Starts a real `wanforge serve --no-workers` (one uvicorn process) per variant and database, seeds
predictions as clients make them (half completed with an output, half running; each input holds
an inline `data:` image, as the SDKs send them), polls them round robin with `wrk` over loopback,
and prints requests/s and latency percentiles. Variants are source trees (PYTHONPATH) run one
after the other in the same invocation, so a before/after comparison sees the same machine load:

    git archive <base> src | tar -x -C /tmp/base
    .venv/bin/python benchmarks/bench_api_poll.py --variant before=/tmp/base/src --variant after=src \\
        --database sqlite --database postgresql+psycopg://postgres@127.0.0.1:5432/postgres

`--env NAME:KEY=VALUE` sets an environment variable for one variant's server: the same tree
with other settings, side by side (`--variant a=src --variant b=src --env b:WANFORGE_KEY_CACHE_S=5`).
Each row also gives the CPU seconds the server and `wrk` used during the measured run: they
share the machine's cores.

Needs `wrk` (Debian: apt-get install wrk). A PostgreSQL URL names a server; databases are made
on it (each tree's seeded once, then copied for each run) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import create_engine, make_url, text

API_KEY = "wf_bench_" + "b" * 32
# `--workers 0` rather than `--no-workers`: older trees (a "before" variant) know only that
SERVE = (sys.executable, "-m", "wanforge", "serve", "--workers", "0")
PERCENTILES = ("50%", "90%", "99%")


@dataclass(frozen=True)
class Variant:
    name: str
    src: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Outcome:
    variant: str
    database: str
    requests_s: float
    latency_ms: dict[str, float]
    non_2xx: int
    server_cpu_s: float  # user + system CPU seconds of the server during the measured run
    wrk_cpu_s: float  # and of wrk (the two share the machine's cores)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Databases:
    """Seeded databases: 'sqlite' (a file) or a PostgreSQL server URL (databases made on it).

    Each (database, source tree) is seeded once, as a template; every run gets a fresh copy of
    it, so runs start alike and the seeding (seconds) is not repeated for each."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.templates: dict[tuple[str, Path], tuple[str, list[str]]] = {}  # -> (file or name, ids)
        self.made: list[tuple[str, str]] = []  # PostgreSQL (server URL, database) to drop

    def _seed(self, url: str, src: Path) -> list[str]:
        env = {**os.environ, "PYTHONPATH": str(src.resolve())}
        command = [sys.executable, "-c", SEED, url, API_KEY, str(self.args.predictions)]
        seeded = subprocess.run(
            [*command, str(self.args.image_bytes)], env=env, capture_output=True, text=True, check=True
        )
        return seeded.stdout.split()

    def _create(self, spec: str, template: str | None = None) -> str:
        name = f"wanforge_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(spec, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        admin.dispose()
        self.made.append((spec, name))
        return name

    def fresh(self, spec: str, src: Path, data_dir: Path) -> tuple[str, list[str]]:
        """(a URL of a fresh copy of the seeded database, the predictions' ids)."""
        if (spec, src) not in self.templates:
            if spec == "sqlite":
                path = self.work / f"template-{uuid.uuid4().hex[:6]}.db"
                self.templates[spec, src] = (str(path), self._seed(f"sqlite:///{path}", src))
            else:
                name = self._create(spec)
                url = make_url(spec).set(database=name).render_as_string(hide_password=False)
                self.templates[spec, src] = (name, self._seed(url, src))
        template, ids = self.templates[spec, src]
        if spec == "sqlite":
            shutil.copyfile(template, data_dir / "wanforge.db")  # the seeding closed it: no WAL left
            return f"sqlite:///{data_dir / 'wanforge.db'}", ids
        name = self._create(spec, template)
        return make_url(spec).set(database=name).render_as_string(hide_password=False), ids

    def drop_all(self) -> None:
        for spec, name in reversed(self.made):
            admin = create_engine(spec, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


SEED = """
import base64, sys
from sqlalchemy import update
from wanforge.store import jobs
from wanforge.store.db import Database
from wanforge.store.keys import ensure_key
from wanforge.store.migrate import upgrade
from wanforge.store.tables import Prediction
url, key, count, image_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
upgrade(url)
db = Database(url)
owner = ensure_key(db, key)
image = "data:image/png;base64," + base64.b64encode(bytes(image_bytes)).decode()
for i in range(count):
    row = jobs.create_prediction(db, model="alibaba/wan-2.2/i2v-plus-480p", kind="generate",
        input={"image": image, "prompt": "a cat surfing", "seed": -1}, server_base="",
        max_attempts=3, api_key_id=owner.id)
    with db.session() as s:
        if i % 2:
            s.execute(update(Prediction).where(Prediction.id == row.id).values(status="processing",
                progress={"step": 12, "total": 40, "elapsed_s": 31.5}, attempts=1))
        else:
            s.execute(update(Prediction).where(Prediction.id == row.id).values(status="completed",
                outputs=[f"outputs/{row.id}/video.mp4"], inference_ms=91234, attempts=1,
                result={"seed": 1234, "nsfw": [False], "timings": {"inference": 91234}}))
    print(row.id)
"""

LUA = """
local ids = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/api/v3/predictions/" .. ids[(i %% #ids) + 1] .. "/result",
                    {["Authorization"] = "Bearer %s"})
end
"""


def parse_wrk(output: str) -> tuple[float, dict[str, float], int]:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    latency: dict[str, float] = {}
    for pct in PERCENTILES:
        match = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]
            latency[pct] = float(match[1]) * scale
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return rate, latency, int(non_2xx[1]) if non_2xx else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_run(command: list[str]) -> tuple[str, float]:
    """Run `command` to its end: (stdout, its user + system CPU seconds)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    _, status, usage = os.wait4(process.pid, 0)
    out, err = process.stdout.read(), process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {err}")
    return out, usage.ru_utime + usage.ru_stime


def run_one(
    variant: Variant, db_spec: str, args: argparse.Namespace, work: Path, databases: Databases
) -> Outcome:
    data_dir = work / f"{variant.name}-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(variant.src.resolve()),
        "WANFORGE_API_KEY": API_KEY,
        **variant.env,
    }
    url, ids = databases.fresh(db_spec, variant.src, data_dir)
    env["WANFORGE_DATABASE_URL"] = url
    port = free_port()
    log = (data_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [*SERVE, "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{variant.name}: server did not start; see {data_dir / 'server.log'}")
            time.sleep(0.2)
        first = httpx.get(
            f"{base}/api/v3/predictions/{ids[0]}/result",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
        assert first.status_code == 200, first.text
        script = data_dir / "poll.lua"
        script.write_text(LUA % (", ".join(f'"{i}"' for i in ids), API_KEY))
        wrk = ["wrk", f"-t{args.threads}", f"-c{args.connections}", "--latency", "-s", str(script)]
        timed_run([*wrk, "-d2s", base])  # warm-up
        server_cpu = cpu_seconds(server.pid)
        done, wrk_cpu = timed_run([*wrk, f"-d{args.duration}s", base])
        server_cpu = cpu_seconds(server.pid) - server_cpu
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    rate, latency, non_2xx = parse_wrk(done)
    database_name = "sqlite" if db_spec == "sqlite" else "postgresql"
    return Outcome(variant.name, database_name, rate, latency, non_2xx, server_cpu, wrk_cpu)


def parse_variants(specs: list[str], env_specs: list[str]) -> list[Variant]:
    """`NAME=SRC` trees, each with the `NAME:KEY=VALUE` environment variables named for it."""
    named = [tuple(v.split("=", 1)) for v in specs] or [("current", "src")]
    envs: dict[str, dict[str, str]] = {name: {} for name, _ in named}
    for spec in env_specs:
        name, _, assignment = spec.partition(":")
        key, _, value = assignment.partition("=")
        if name not in envs or not key:
            sys.exit(f"--env {spec!r}: expected NAME:KEY=VALUE for a --variant NAME")
        envs[name][key] = value
    return [Variant(name, Path(src), envs[name]) for name, src in named]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=SRC", help="a source tree to run"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="an environment variable for one variant's server (the same tree, other settings)",
    )
    parser.add_argument("--database", action="append", default=[], help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measured wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--predictions", type=int, default=200)
    parser.add_argument("--image-bytes", type=int, default=150_000, help="size of each input's data: image")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all runs, interleaved")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    variants = parse_variants(args.variant, args.env)
    databases = args.database or ["sqlite"]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="wanforge-bench-") as tmp:
        seeded = Databases(Path(tmp), args)
        try:
            for _ in range(args.rounds):
                for db_spec in databases:
                    for variant in variants:
                        outcome = run_one(variant, db_spec, args, Path(tmp), seeded)
                        outcomes.append(outcome)
                        print(_row(outcome), flush=True)
        finally:
            seeded.drop_all()
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, {os.cpu_count()} CPUs")
    print(
        f"{'variant':<10} {'database':<11} {'req/s':>8} "
        + " ".join(f"{p:>8}" for p in PERCENTILES)
        + "  server CPU  wrk CPU (s)"
    )
    for outcome in outcomes:
        print(_row(outcome))


def _row(o: Outcome) -> str:
    lat = " ".join(f"{o.latency_ms.get(p, float('nan')):>6.1f}ms" for p in PERCENTILES)
    bad = f"  ({o.non_2xx} non-2xx)" if o.non_2xx else ""
    cpu = f"  {o.server_cpu_s:>10.1f} {o.wrk_cpu_s:>8.1f}"
    return f"{o.variant:<10} {o.database:<11} {o.requests_s:>8.0f} {lat}{cpu}{bad}"


if __name__ == "__main__":
    main()
