from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connections

pytestmark = pytest.mark.django_db


def test_ensure_database_creates_a_missing_database_once(settings):
    name = "ensure_database_probe"
    params = connections["default"].get_connection_params()
    admin = {
        "host": params.get("host"),
        "port": params.get("port"),
        "user": params["user"],
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    settings.DATABASES["probe"] = {**settings.DATABASES["default"], "NAME": name}
    try:
        out = StringIO()
        call_command("ensure_database", database="probe", stdout=out)
        call_command("ensure_database", database="probe", stdout=out)
        assert f"Created database '{name}'" in out.getvalue()
        assert f"Database '{name}' exists" in out.getvalue()
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _scratch_database_url(suffix: str) -> tuple[str, dict]:
    """Return a URL for a database named after this run's, and admin parameters.

    Other checkouts test on the same server at the same time: the name follows
    this run's test database, so theirs never collide with it.
    """
    params = connections["default"].get_connection_params()
    host, port, user = (
        params.get("host") or "127.0.0.1",
        params.get("port"),
        params["user"],
    )
    name = f"{connections['default'].settings_dict['NAME']}_{suffix}"
    url = f"postgres://{user}@{host}:{port or 5432}/{name}"
    return url, {"host": host, "port": port, "user": user, "dbname": "postgres"}


def test_migrate_on_a_missing_database_ends_in_one_line(manage):
    url, admin = _scratch_database_url("missing")
    with psycopg.connect(autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}"')

    result = manage(
        "migrate",
        unset=("REDIS_URL",),
        DATABASE_URL=url,
        SECRET_KEY="scratch-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("Database error: ")
    assert f'database "{url.rsplit("/", 1)[1]}" does not exist' in line
    assert "manage.py ensure_database" in line


def test_a_migrated_fresh_database_without_redis_serves_every_command(manage):
    """migrate creates the database cache table, so seed_demo works right after."""
    url, admin = _scratch_database_url("fresh")
    name = url.rsplit("/", 1)[1]
    env = {
        "DATABASE_URL": url,
        "SECRET_KEY": "scratch-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    }
    with psycopg.connect(autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate = manage("migrate", "-v", "0", unset=("REDIS_URL",), **env)
        assert migrate.returncode == 0, migrate.stderr
        seed = manage(
            "seed_demo",
            *("--users", "2", "--products", "5", "--categories", "2"),
            unset=("REDIS_URL",),
            **env,
        )
        assert seed.returncode == 0, seed.stderr
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT count(*) FROM django_cache").fetchone()[0]
        # The catalog writes bumped their cache namespaces in the table.
        assert rows > 0
    finally:
        with psycopg.connect(autocommit=True, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
