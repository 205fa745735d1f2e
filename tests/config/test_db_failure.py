"""PostgreSQL failure against a throwaway cluster this module starts and stops."""

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.config.test_gunicorn import (
    BASE_DIR,
    app_server,
    free_port,
    http_get,
    server_env,
)


def _postgres_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    assert candidates, "PostgreSQL server binaries are needed for these tests"
    return candidates[0].parent


@dataclass
class Cluster:
    """A PostgreSQL cluster on a spare port, run as the postgres OS user."""

    bindir: Path
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        as_postgres = (
            {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        )
        subprocess.run(args, check=True, capture_output=True, timeout=60, **as_postgres)

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.root / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.root / "data"),
            "-m",
            "fast",
            "-w",
            "stop",
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pg-failure-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(_postgres_bindir(), root, free_port())
    cluster.init()
    cluster.start()
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=BASE_DIR,
            env=server_env(DATABASE_URL=cluster.url, DEBUG="True"),
            check=True,
            timeout=180,
        )
        yield cluster
    finally:
        subprocess.run(
            [
                str(cluster.bindir / "pg_ctl"),
                "-D",
                str(root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            user="postgres" if os.geteuid() == 0 else None,
        )
        shutil.rmtree(root, ignore_errors=True)


# The admin login page reads the session row named by the cookie: a real view
# that needs PostgreSQL, from django.contrib alone.
SESSION = {"Cookie": "sessionid=" + "x" * 32}


def _assert_503(status, headers, body, code: str) -> None:
    assert status == 503, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == code
    assert int(headers["Retry-After"]) > 0
    assert headers["X-Request-ID"]


@pytest.mark.parametrize(
    "workers",
    [
        {"SERVER": "granian", "SERVER_THREADS": "2", "DB_CONNECTIONS": "persistent"},
        {
            "SERVER": "gunicorn",
            "GUNICORN_WORKER_CLASS": "sync",
            "DB_CONNECTIONS": "persistent",
        },
        {
            "SERVER": "gunicorn",
            "GUNICORN_WORKER_CLASS": "gthread",
            "GUNICORN_THREADS": "2",
            "DB_CONNECTIONS": "pool",
            "DB_POOL_SIZE": "2",
            "DB_MAX_OVERFLOW": "0",
            "DB_POOL_TIMEOUT": "3",
        },
    ],
    ids=["granian-persistent", "sync-persistent", "gthread-pool"],
)
def test_database_down_is_a_fast_503_and_service_recovers_without_restart(
    cluster, tmp_path, workers
):
    env = server_env(DATABASE_URL=cluster.url, DEBUG="True", WORKERS="2", **workers)
    with app_server(env, tmp_path / "gunicorn.log") as url:
        for _ in range(4):
            assert http_get(f"{url}/admin/login/", SESSION)[0] == 200
        # Ready before the database goes: the probe's own checks (each with a
        # sub-second budget) can miss one under a loaded machine, so it may
        # take a few tries; the subject here is what follows.
        ready = []
        while ready[-1:] != [200]:
            assert len(ready) < 20, ready
            if ready:
                time.sleep(0.5)
            ready.append(http_get(f"{url}/readyz")[0])

        cluster.stop()
        try:
            for _ in range(2):
                # The client timeout bounds the answer: a hanging worker fails here.
                _assert_503(
                    *http_get(f"{url}/admin/login/", SESSION, timeout=10),
                    code="database_unavailable",
                )
            # An API read that misses the cache needs PostgreSQL too.
            _assert_503(
                *http_get(f"{url}/api/v1/products/?limit=7", timeout=10),
                code="database_unavailable",
            )
            # The probe answers within a second, whatever DB_POOL_TIMEOUT is.
            status, _, body = http_get(f"{url}/readyz", timeout=2.5)
            assert status == 503
            assert json.loads(body)["database"] == "down"
            assert http_get(f"{url}/healthz", timeout=10)[0] == 200
        finally:
            cluster.start()

        # Persistent connections reconnect on the next request; each worker's
        # pool reconnects in the background with a backoff, answering fast
        # 503s until it has. Either way, no restart is needed.
        paths = itertools.cycle(["/admin/login/", "/api/v1/products/?limit=7"])
        statuses: list[int] = []
        while statuses[-6:] != [200] * 6:
            assert len(statuses) < 40, statuses
            statuses.append(http_get(f"{url}{next(paths)}", SESSION)[0])
            if statuses[-1] != 200:
                time.sleep(0.5)
        assert set(statuses) <= {200, 503}
        if workers["DB_CONNECTIONS"] == "persistent":
            assert statuses == [200] * 6
            assert http_get(f"{url}/readyz")[0] == 200
        else:
            # The six 200s may all have come from one worker while the other
            # worker's pool is still in its reconnect backoff.
            deadline = time.monotonic() + 15
            while http_get(f"{url}/readyz")[0] != 200:
                assert time.monotonic() < deadline, "readyz never recovered"
                time.sleep(0.5)
        status, _, body = http_get(f"{url}/metrics")
    assert 'app_db_unavailable_total{reason="unavailable"}' in body.decode()


def test_statement_timeout_is_a_503_and_leaves_no_transaction_open(cluster, tmp_path):
    env = server_env(
        DATABASE_URL=cluster.url,
        DEBUG="True",
        WORKERS="1",
        DB_STATEMENT_TIMEOUT_MS="500",
    )
    with (
        app_server(env, tmp_path / "gunicorn.log") as url,
        psycopg.connect(cluster.url) as blocker,
    ):
        assert http_get(f"{url}/admin/login/", SESSION)[0] == 200
        blocker.execute("LOCK TABLE django_session IN ACCESS EXCLUSIVE MODE")

        _assert_503(*http_get(f"{url}/admin/login/", SESSION), code="database_timeout")

        blocker.rollback()
        stuck = blocker.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
        ).fetchone()[0]
        assert stuck == 0
        assert http_get(f"{url}/admin/login/", SESSION)[0] == 200
