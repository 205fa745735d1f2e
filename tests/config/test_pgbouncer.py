"""The app behind a real PgBouncer in transaction mode (docs/operations.md).

Its pool holds one server connection, so every client's transactions take
turns on it: what one session leaves on the server (a prepared statement, a
cursor) is met by the next. Served with the settings the docs give for it,
signed-in writes, reads and an export all work; the hot reads' prepared
statements, left on, are what ``DB_PREPARED_STATEMENTS=False`` is for.
"""

import csv
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

import pytest
from django.contrib.auth.hashers import Argon2PasswordHasher
from django.db import connection

from tests.config.conftest import free_port
from tests.config.test_gunicorn import BASE_DIR, app_server, http_get, server_env
from tests.factories import TEST_PASSWORD, CategoryFactory, ProductFactory, UserFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("pgbouncer") is None, reason="PgBouncer is not installed"
    ),
]


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    """Run PgBouncer (transaction mode, one server connection); yield its port."""
    port = free_port()
    db = connection.settings_dict
    # PgBouncer refuses to run as root: it then runs as PostgreSQL's user,
    # which must read its files and write its log.
    home = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    home.chmod(0o777)
    (home / "users.txt").write_text(f'"{db["USER"]}" ""\n')
    (home / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 100\n"
        # The app sends statement_timeout and its kin as startup options.
        "ignore_startup_parameters = options,extra_float_digits\n"
    )
    command = ["pgbouncer", str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", pwd.getpwnam("postgres").pw_name]  # KeyError: none
    log = (home / "log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (home / "log").read_text()
            with suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert time.monotonic() < deadline, (home / "log").read_text()
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _call(
    url: str, method: str = "GET", body=None, token: str = ""
) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - a local test server
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        return error.code, {"body": error.read().decode(errors="replace")}


def test_served_behind_pgbouncer_with_the_documented_settings(pgbouncer, tmp_path):
    user = UserFactory()
    # The server runs the production hashers (the tests' is MD5).
    hasher = Argon2PasswordHasher()
    user.password = hasher.encode(TEST_PASSWORD, hasher.salt())
    user.save(update_fields=["password"])
    category = CategoryFactory()
    ProductFactory.create_batch(30, owner=user, category=category)
    db = connection.settings_dict
    env = server_env(
        DATABASE_URL=f"postgres://{db['USER']}@127.0.0.1:{pgbouncer}/{db['NAME']}",
        DB_PREPARED_STATEMENTS="False",
        DB_DISABLE_SERVER_SIDE_CURSORS="True",
        WORKERS="2",
    )
    with app_server(env, tmp_path / "server.log") as url:
        api = f"{url}/api/v1"
        status, tokens = _call(
            f"{api}/auth/token/",
            "POST",
            {"email": user.email, "password": TEST_PASSWORD},
        )
        assert status == 200, tokens
        token = tokens["access"]

        def session(n: int) -> list[int]:
            # A signed-in client: create, read, change, list, delete.
            status, created = _call(
                f"{api}/products/",
                "POST",
                {"sku": f"PGB-{n}", "name": f"Pooled {n}", "price": "9.50",
                 "category": category.pk},
                token,
            )  # fmt: skip
            statuses = [status]
            detail = f"{api}/products/{created.get('id')}/"
            for _ in range(3):
                statuses.append(_call(detail, token=token)[0])
                statuses.append(_call(detail, "PATCH", {"stock": n}, token)[0])
                statuses.append(_call(f"{api}/products/?limit=5", token=token)[0])
            statuses.append(_call(detail, "DELETE", token=token)[0])
            return statuses

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(session, range(12)))
        assert all(s == [201, *[200] * 9, 204] for s in results), results
        assert http_get(f"{url}/readyz")[0] == 200

    # The export reads keyset batches instead of a server-side cursor.
    output = tmp_path / "export.csv"
    subprocess.run(
        [sys.executable, "manage.py", "export_products", "--output", str(output)],
        cwd=BASE_DIR, env=env, check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    with output.open(newline="", encoding="utf-8-sig") as handle:
        assert len(list(csv.DictReader(handle))) == 30


def test_prepared_statements_need_pgbouncer_to_keep_them(pgbouncer, user):
    # Two sessions on PgBouncer's one server connection: a statement one
    # prepared is on the server the other uses (the control for the test
    # above, which would fail the same way with the setting left on).
    def session(prepare_threshold: int | None):
        other = connection.copy()
        other.settings_dict.update(HOST="127.0.0.1", PORT=str(pgbouncer))
        other.settings_dict["OPTIONS"] = {
            **other.settings_dict["OPTIONS"],
            "prepare_threshold": prepare_threshold,
        }
        return other

    def read(conn) -> str:
        with conn.prepared_cursor() as cursor:
            cursor.execute(
                "SELECT username FROM accounts_user WHERE id = %s", [user.pk]
            )
            return cursor.fetchone()[0]

    for threshold, works in ((None, True), (5, False)):
        first, second = session(threshold), session(threshold)
        try:
            outcomes = []
            for conn in (first, second, first, second):
                try:
                    outcomes.append(read(conn) == user.username)
                except Exception:  # noqa: BLE001 - psycopg's, wrapped by Django
                    outcomes.append(False)
                    conn.close()
            assert all(outcomes) is works, (threshold, outcomes)
        finally:
            first.close()
            second.close()
