"""The system under test: scratch database, Redis db and the served app."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_STAFF_EMAIL = "bench-staff@bench.invalid"
BENCH_USER_EMAIL = "bench-user@bench.invalid"
BENCH_PASSWORD = "bench-Pa55word-not-secret"
BENCH_EMAIL_DOMAIN = "bench.invalid"


@dataclass
class Stack:
    """Connection facts and production-like environment for every process started."""

    pg_server: str = "postgres://postgres@127.0.0.1:5432"
    database: str = "bench"
    redis_url: str = "redis://127.0.0.1:6379/1"
    api_prefix: str = "/api/v1"
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))
    log_path: Path = RESULTS_DIR / "server.log"

    @property
    def database_url(self) -> str:
        """Return the scratch database URL."""
        return f"{self.pg_server}/{self.database}"

    def env(self, **overrides: str) -> dict[str, str]:
        """Return the environment of a production process against the scratch stores."""
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "False",
            "SECRET_KEY": self.secret_key,
            # Plain HTTP on loopback: no TLS redirect, cookies without Secure
            # would not matter to wrk, but keep production's cookie flags.
            "SECURE_SSL_REDIRECT": "False",
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "API_PREFIX": self.api_prefix,
            # Long enough for a full run; sign-ins are throttled, so the
            # harness signs in once per account and server.
            "ACCESS_TOKEN_EXPIRE_MINUTES": "240",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("DJANGO_SUPERUSER_PASSWORD", None)
        env.update(overrides)
        return env

    def manage(self, *args: str, quiet: bool = True) -> subprocess.CompletedProcess:
        """Run `manage.py ARGS` against the scratch stores; fail loudly."""
        completed = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=quiet,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            detail = (completed.stderr or "")[-2000:] if quiet else ""
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{detail}")
        return completed

    def connect(self, *, database: str | None = None) -> psycopg.Connection:
        """Open an autocommit connection to the scratch database (or *database*)."""
        return psycopg.connect(
            f"{self.pg_server}/{database or self.database}", autocommit=True
        )

    def redis(self) -> redis.Redis:
        """Return a client of the scratch Redis database."""
        return redis.Redis.from_url(self.redis_url)

    def flush_cache(self) -> None:
        """Empty the scratch Redis database (cache, throttles, cached users)."""
        self.redis().flushdb()

    def drop_database(self) -> None:
        """Drop the scratch database (never any other)."""
        with self.connect(database="postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def short_commit(root: Path = ROOT) -> str:
    """Return the checkout's abbreviated HEAD commit ("" outside git)."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def free_port(exclude: Collection[int] = ()) -> int:
    """Return a TCP port nobody listens on right now (and not in *exclude*).

    BENCH_PORTS (e.g. ``18300-18399``) keeps the servers in a range shared
    machines hand out; unset, the system picks any free port. *exclude*
    holds ports handed out already but not bound yet.
    """
    low, _, high = os.environ.get("BENCH_PORTS", "0").partition("-")
    candidates = range(int(low), int(high or low) + 1) if int(low) else [0] * 20
    for port in candidates:
        if port in exclude:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            found = int(sock.getsockname()[1])
        if found not in exclude:
            return found
    raise RuntimeError(f"no free port in BENCH_PORTS={low}-{high}")


@dataclass(frozen=True)
class ServerConfig:
    """How the project is served: server model, processes, threads, connections.

    worker_class "granian" is the default server (`python -m config.serve`);
    "granian-asgi" runs the front over ASGI instead of RSGI; "granian-wsgi"
    runs Django on granian's WSGI threads without the front;
    "sync" and "gthread" are gunicorn's workers (SERVER=gunicorn); "raw" is
    granian serving bench/rawapp.py, a constant answer (the ceiling). threads=None
    leaves the server's own default.
    """

    label: str
    workers: int
    worker_class: str = "granian"
    threads: int | None = None
    db_connections: str = "persistent"

    def env(self) -> dict[str, str]:
        """Return the environment variables selecting this configuration."""
        env = {"WORKERS": str(self.workers), "DB_CONNECTIONS": self.db_connections}
        if self.worker_class == "raw":
            env["GRANIAN_WORKERS"] = str(self.workers)
        elif self.worker_class.startswith("granian"):
            env["SERVER"] = "granian"
            if self.worker_class != "granian":
                env["SERVER_INTERFACE"] = self.worker_class.removeprefix("granian-")
            if self.threads:
                env["SERVER_THREADS"] = str(self.threads)
        else:
            env["SERVER"] = "gunicorn"
            env["GUNICORN_WORKER_CLASS"] = self.worker_class
            env["GUNICORN_THREADS"] = str(self.threads or 1)
        return env

    def command(self) -> list[str]:
        """Return the command that starts this server."""
        if self.worker_class == "raw":
            return [sys.executable, "-m", "granian", "--interface", "asginl"]
        return [sys.executable, "-m", "config.serve"]


@contextmanager
def server(stack: Stack, config: ServerConfig, *, root: Path = ROOT) -> Iterator[str]:
    """Serve the project as `make run` does; yield its base URL, stop it on exit.

    *root* serves another checkout of the project (a baseline commit) with this
    environment's Python packages; an older checkout has no `config.serve`,
    so gunicorn is started directly there.
    """
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix="bench-prom-")
    env = stack.env(
        **config.env(),
        HOST="127.0.0.1",
        PORT=str(port),
        GRANIAN_PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    )
    stack.log_path.parent.mkdir(parents=True, exist_ok=True)
    log = stack.log_path.open("ab")
    log.write(f"\n=== server {config} from {root} on port {port}\n".encode())
    log.flush()
    command = config.command()
    if root != ROOT and not (root / "config" / "serve.py").is_file():
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "-c",
            "python:config.gunicorn",
            "config.wsgi",
        ]
    elif config.worker_class == "raw":
        command.append("bench.rawapp:application")
    process = subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, process, stack.log_path)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait_healthy(
    base_url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {process.returncode}; see {log_path}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not answer /healthz in time")
