"""Start the HTTP server: `python -m config.serve` (make run, the image, compose).

SERVER=granian (the default): granian's HTTP/1.1 server (Rust I/O, keep-alive)
runs config.serving's ASGI front in WORKERS processes, each with
SERVER_THREADS handler threads. SERVER=gunicorn runs
`gunicorn -c python:config.gunicorn config.wsgi` instead (sync or gthread
workers, see config/gunicorn.py). Nothing here imports Django or touches the
database: the app, its connections and any pool are created in each worker
after the fork.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SERVERS = ("granian", "gunicorn")
INTERFACES = ("rsgi", "asgi", "wsgi")
GUNICORN_COMMAND = ["gunicorn", "-c", "python:config.gunicorn", "config.wsgi"]


def prepare_metrics_dir() -> bool:
    """Point PROMETHEUS_MULTIPROC_DIR at a directory; return True if it is ours.

    Every worker writes its samples there and /metrics sums them. It must be
    set before a worker imports prometheus_client, hence in the master, whose
    environment the workers inherit.
    """
    owned = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    if owned:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(
            Path(tempfile.gettempdir()) / f"prometheus-{os.getpid()}"
        )
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    return owned


def empty_metrics_dir() -> None:
    """Delete the samples of a previous run: they must not count."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_file():
                entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)


def worker_lifetime() -> int | None:
    """Return how many seconds a granian worker serves (None: forever)."""
    seconds = int(os.environ.get("SERVER_WORKER_LIFETIME", "3600"))
    return seconds or None


def staggered_births(now: float, workers: int, lifetime: int) -> list[float]:
    """Return birth times that make the first generation expire lifetime/workers apart.

    granian replaces a worker once it is `lifetime` old; all start together, so
    all would be replaced together. Dating worker i i/workers of a lifetime
    into the future spreads the first replacements, and each replacement then
    lives exactly `lifetime`, so they stay spread.
    """
    return [now + i * lifetime / workers for i in range(workers)]


def max_requests_offset(age: int, worker_count: int, limit: int) -> int:
    """Return the requests added to the limit of the worker spawned *age*-th.

    Worker i of the first generation serves i/workers of a limit more, then
    every replacement serves the plain limit: with evenly shared load the
    recycling stays limit/workers requests apart instead of all at once.
    """
    if age > worker_count or limit <= 0:
        return 0
    return (age - 1) * limit // worker_count


def granian_options() -> dict[str, Any]:
    """Return the granian server options read from the environment."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    level = os.environ.get("LOG_LEVEL", "INFO").lower()
    # rsgi (granian's own protocol) and asgi run config/serving.py's front;
    # wsgi runs Django on granian's own WSGI threads, without the front (for
    # comparison only: /healthz then waits for a free thread).
    interface = os.environ.get("SERVER_INTERFACE", "rsgi")
    if interface not in INTERFACES:
        sys.exit(f"SERVER_INTERFACE must be one of {', '.join(INTERFACES)}")
    wsgi = interface == "wsgi"
    threads = int(os.environ.get("SERVER_THREADS", "1"))
    return {
        "target": "config.wsgi:application" if wsgi else "config.serving:application",
        "address": os.environ.get("HOST", "127.0.0.1"),
        "port": int(os.environ.get("PORT", "8000")),
        "interface": Interfaces(interface),
        "blocking_threads": threads if wsgi else None,
        "workers": int(os.environ.get("WORKERS", "4")),
        "http": HTTPModes.http1,
        # The front's event loop: every request goes to a handler thread and
        # back through it (uvloop, a dependency, cost a few % less CPU per
        # request under the bench's mix than asyncio's own loop).
        "loop": Loops.uvloop,
        "websockets": False,
        "http1_settings": HTTP1Settings(
            # A client has this long to send a request's headers; dripping
            # clients cost no thread meanwhile, only a socket.
            header_read_timeout=int(os.environ.get("SERVER_HEADER_TIMEOUT", "10"))
            * 1000,
            keep_alive=True,
        ),
        "log_level": LogLevels(level if level in LogLevels.__members__ else "info"),
        "log_dictconfig": {
            "formatters": {"generic": {"()": "config.logging.JSONFormatter"}},
            "handlers": {
                "console": {
                    "formatter": "generic",
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                },
            },
            "loggers": {
                "_granian": {"handlers": ["console"], "propagate": False},
            },
        },
        # The app writes one JSON line per request (config.request).
        "log_access": False,
        "respawn_failed_workers": True,
        "workers_lifetime": worker_lifetime(),
        "workers_kill_timeout": int(os.environ.get("SERVER_GRACEFUL_TIMEOUT", "30")),
    }


def run_granian() -> None:
    """Serve with granian until SIGINT/SIGTERM."""
    from granian.server import Server

    class StaggeredServer(Server):
        """granian's server whose workers are never replaced together."""

        def _spawn_workers(self, spawn_target: Any, target_loader: Any) -> None:
            super()._spawn_workers(spawn_target, target_loader)
            if self.workers_lifetime:
                births = staggered_births(
                    time.monotonic(), len(self.wrks), self.workers_lifetime
                )
                for worker, birth in zip(self.wrks, births, strict=True):
                    worker.birth = birth

    owned = prepare_metrics_dir()
    empty_metrics_dir()
    if owned:
        atexit.register(
            shutil.rmtree, os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True
        )
    StaggeredServer(**granian_options()).serve()


def main() -> None:
    """Start the server SERVER names."""
    server = os.environ.get("SERVER", "granian")
    if server not in SERVERS:
        sys.exit(f"SERVER must be one of {', '.join(SERVERS)}, not {server!r}")
    if server == "gunicorn":
        executable = Path(sys.executable).parent / "gunicorn"
        os.execv(executable, [str(executable), *GUNICORN_COMMAND[1:]])  # noqa: S606
    run_granian()


if __name__ == "__main__":
    main()
