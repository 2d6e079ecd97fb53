"""Start and stop a throwaway local fleet: a private Redis server and real worker processes.

Used by the integration tests and ``bench/fleet.py``; handy for trying the fleet on one machine.
Every process it starts runs in its own session and is stopped by its own pid (never by name).

Example::

    with LocalFleet.start(tmp_dir) as fleet:
        fleet.start_worker(["smollm2-135m"])
        fleet.wait_live(["smollm2-135m"])
        dispatcher = fleet.dispatcher()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.errors import DispatchError
from workers.settings import FleetSettings
from workers.store import FleetStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalFleet:
    """A Redis server (append-only persistence on) plus worker processes, all owned by this object."""

    def __init__(self, workdir: Path, port: int, env: dict[str, str]) -> None:
        self.workdir, self.port, self.extra_env = Path(workdir), port, env
        self.redis: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.url = f"redis://127.0.0.1:{port}/0"

    @classmethod
    def start(cls, workdir: Path, *, env: dict[str, str] | None = None) -> "LocalFleet":
        fleet = cls(workdir, free_port(), dict(env or {}))
        fleet.start_redis()
        return fleet

    # ---- redis -----------------------------------------------------------------------------
    def start_redis(self) -> None:
        """Start (or restart, same data folder) the Redis server with appendfsync always."""
        if shutil.which("redis-server") is None:
            raise DispatchError("redis-server is not installed", hint="run `scripts/setup.sh --with-redis`")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
               "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        log = open(self.workdir / "redis.log", "ab")
        self.redis = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        store = self.store()
        for _ in range(100):
            try:
                store.r.ping()
                return
            except Exception:
                time.sleep(0.05)
        raise DispatchError(f"redis-server on port {self.port} did not start", hint=f"see {self.workdir}/redis.log")

    def kill_redis(self) -> None:
        """SIGKILL the Redis server (no clean shutdown: only fsynced data survives)."""
        if self.redis is not None:
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait(timeout=10)

    # ---- workers ---------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "EXPERTMIX_REDIS_URL": self.url, "PYTHONUNBUFFERED": "1", **self.extra_env}

    def settings(self) -> FleetSettings:
        return FleetSettings.from_env(self.env())

    def store(self) -> FleetStore:
        return FleetStore.from_url(self.url)

    def start_worker(self, models: list[str], *, log_name: str | None = None) -> subprocess.Popen:
        """Launch ``expertmix worker --models ...`` in its own session."""
        exe = Path(sys.executable).with_name("expertmix")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "orchestrator.faces.cli_fleet"]
        cmd += ["worker", "--models", ",".join(models), "--loglevel", "INFO"]
        name = log_name or f"worker-{'+'.join(models)}-{len(self.workers)}.log"
        log = open(self.workdir / name, "ab")
        proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = self.workdir / name  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a worker's whole process group (the Celery parent and its pool children)."""
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def wait_live(self, models: list[str], *, timeout_s: float = 600, procs: list[Any] | None = None) -> None:
        """Block until every model has a live worker (its engines are loaded)."""
        from workers.fleet import live_workers

        store, ttl = self.store(), self.settings().worker_ttl_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(live_workers(store, m, ttl_s=ttl) for m in models):
                return
            for p in procs or self.workers:
                if p.poll() is not None:
                    tail = Path(p.log_path).read_text(errors="replace")[-1500:] if hasattr(p, "log_path") else ""
                    raise DispatchError(f"worker pid {p.pid} exited with {p.returncode}; its log ends:\n{tail}",
                                        hint=f"see the worker logs in {self.workdir}")
            time.sleep(0.5)
        raise DispatchError(f"no live worker for {models} after {timeout_s:.0f}s", hint=f"see {self.workdir}")

    def dispatcher(self, registry: Any = None) -> Any:
        from orchestrator.config import ExpertRegistry
        from workers.celery_app import configure
        from workers.celery_dispatch import CeleryDispatcher

        settings = self.settings()
        configure(settings)
        return CeleryDispatcher(registry or ExpertRegistry.default(), settings, self.store())

    def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and the Redis server."""
        for proc in self.workers:
            if proc.poll() is None:
                self.kill_worker(proc, signal.SIGTERM)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=10)

    def __enter__(self) -> "LocalFleet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
