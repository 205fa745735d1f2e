"""The embedded PostgreSQL of `make run`: quiet start, `make stop`."""

import os
import subprocess
import sys

from config.embedded import (
    embedded_postgres_running,
    embedded_postgres_stop,
    embedded_postgres_stop_command,
)
from tests.config.test_gunicorn import BASE_DIR

# As under gunicorn, whose logging passes INFO records on.
START = (
    "import logging, sys; from pathlib import Path;"
    " logging.basicConfig(level=logging.INFO);"
    " from config.embedded import embedded_postgres_database;"
    " embedded_postgres_database(Path(sys.argv[1]))"
)


def python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed commands
        [sys.executable, *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_embedded_server_starts_with_one_line_and_make_stop_stops_it(tmp_path):
    data_dir = tmp_path / "postgres"
    try:
        first = python("-c", START, str(data_dir))
        again = python("-c", START, str(data_dir))

        assert first.stderr == (
            f"Started the embedded PostgreSQL ({data_dir}); `make stop` stops it.\n"
        )
        assert again.stderr == ""  # reused, not started
        assert embedded_postgres_running(data_dir)

        stop = python("-m", "config.embedded", "stop", str(data_dir))

        assert stop.stdout == f"Stopped the embedded PostgreSQL ({data_dir}).\n"
        assert not embedded_postgres_running(data_dir)
        stop = python("-m", "config.embedded", "stop", str(data_dir))
        assert stop.stdout == f"The embedded PostgreSQL is not running ({data_dir}).\n"
    finally:
        embedded_postgres_stop(data_dir)


def test_stop_runs_pg_ctl_as_the_owner_of_the_data_directory(tmp_path):
    command, user = embedded_postgres_stop_command(tmp_path)

    assert command[0].endswith("/pg_ctl")
    assert command[1:] == ["-D", str(tmp_path), "-w", "-m", "fast", "stop"]
    # Owned by this user: no switch (as root, the server's user otherwise).
    assert user is None
    if os.geteuid() == 0:
        os.chown(tmp_path, 65534, 65534)
        assert embedded_postgres_stop_command(tmp_path)[1] == "nobody"


def test_make_stop_is_documented_and_runs_the_stop_helper():
    makefile = (BASE_DIR / "Makefile").read_text()
    assert "stop: install\n\t$(PY) -m config.embedded stop\n" in makefile
    assert "make stop" in (BASE_DIR / "README.md").read_text()
