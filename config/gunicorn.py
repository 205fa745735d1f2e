"""gunicorn settings: `gunicorn -c python:config.gunicorn config.wsgi`.

Everything is chosen by environment variables so the benchmark can compare
sync workers with persistent connections (the default) against threaded
workers with Django's psycopg pool (GUNICORN_WORKER_CLASS=gthread,
GUNICORN_THREADS=4, DB_CONNECTIONS=pool). Nothing here imports Django or
touches the database: the app, and any pool, is loaded in each worker after
the fork.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from gunicorn.glogging import Logger

from config.serve import empty_metrics_dir, max_requests_offset, prepare_metrics_dir

# --- Workers ---
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WORKERS", "4"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(
    os.environ.get("GUNICORN_THREADS", "4" if worker_class == "gthread" else "1")
)
# Loading the app in the master would open database connections (or the pool)
# before fork, and every worker would share them.
preload_app = False
# The workers' heartbeat files live in memory (a container's /tmp may be disk).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108

# --- Timeouts ---
# The worker timeout stays above PostgreSQL's statement_timeout, so a slow
# query ends as a clean 503 before gunicorn kills the worker.
_statement_timeout_s = int(os.environ.get("DB_STATEMENT_TIMEOUT_MS", "30000")) // 1000
timeout = int(os.environ.get("GUNICORN_TIMEOUT", str(_statement_timeout_s + 10)))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Shorter than nginx's upstream keepalive_timeout would make nginx reuse
# sockets gunicorn is closing; docker/nginx.conf keeps its own below this.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

# --- Recycling and request limits ---
# The first workers get limits spread over one more max_requests (pre_fork),
# so that workers sharing the load evenly are not recycled together.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "10000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "1000"))
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# --- Logs (JSON lines) ---
# The app already writes one JSON line per request (config.request, with the
# request and user ids); gunicorn's own access log is off unless asked for.
_access_log_on = os.environ.get("GUNICORN_ACCESS_LOG", "").lower() in {"1", "true", "-"}
logconfig_dict = {
    "formatters": {"generic": {"()": "config.logging.JSONFormatter"}},
    "loggers": {
        "gunicorn.error": {
            "level": os.environ.get("LOG_LEVEL", "INFO"),
            "handlers": ["error_console"],
            "propagate": False,
        },
        "gunicorn.access": {
            "level": "INFO" if _access_log_on else "WARNING",
            "handlers": ["console"],
            "propagate": False,
        },
    },
}


class JSONAccessLogger(Logger):
    """gunicorn logger whose access lines are structured JSON fields."""

    def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
        """Log one request as JSON (method, path, status, duration, request id)."""
        if not self.access_log.isEnabledFor(logging.INFO):
            return
        atoms = self.atoms(resp, req, environ, request_time)
        self.access_log.info(
            "%s %s %s",
            atoms["m"],
            atoms["U"],
            atoms["s"],
            extra={
                "request_id": atoms.get("{x-request-id}o"),
                "method": atoms["m"],
                "path": atoms["U"],
                "status": int(atoms["s"]),
                "duration": request_time.total_seconds(),
                "remote_addr": atoms["h"],
                "pid": os.getpid(),
            },
        )


logger_class = JSONAccessLogger

# --- Prometheus multiprocess mode ---
# Every worker writes its samples to files in this directory and /metrics
# sums them. It must be set before a worker imports prometheus_client, hence
# here, in the master's configuration, which the workers inherit.
_owns_metrics_dir = prepare_metrics_dir()


def on_starting(server: Any) -> None:
    """Empty the metrics directory: samples of a previous run must not count."""
    empty_metrics_dir()


def pre_fork(server: Any, worker: Any) -> None:
    """Stagger the first workers' request limits (see max_requests_offset)."""
    worker.max_requests += max_requests_offset(
        worker.age, server.num_workers, max_requests
    )


def post_fork(server: Any, worker: Any) -> None:
    """Route Python warnings raised while the app loads into the JSON log."""
    logging.captureWarnings(True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges; its counters stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory this configuration created."""
    if _owns_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
