import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SECRET_KEY", "DEBUG"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION_ENV = {
    "DEBUG": "False",
    "SECRET_KEY": "k3y-" + "x9Q!zR7#mP2@" * 5,
    "ALLOWED_HOSTS": "api.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/app",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_every_connection_runs_with_statement_and_idle_timeouts():
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "30s"
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone()[0] == "1min"


def test_connections_are_health_checked_before_use(settings):
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True


def test_check_deploy_passes_with_production_values():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("key", ["", "change-me", "django-insecure-abc"])
def test_production_start_without_real_secret_key_fails_with_one_line(key):
    result = _manage("check", **{**PRODUCTION_ENV, "SECRET_KEY": key})
    assert result.returncode != 0
    assert result.stderr.strip() == "ImproperlyConfigured: SECRET_KEY must be set"


def test_debug_start_without_secret_key_uses_a_development_key():
    result = _manage("check", **{**PRODUCTION_ENV, "SECRET_KEY": "", "DEBUG": "True"})
    assert result.returncode == 0, result.stderr


def test_pool_mode_checks_connections_on_checkout(db):
    # The test database: a fresh machine has no database named "app".
    current = connection.settings_dict
    database_url = (
        f"postgres://{current['USER']}@{current['HOST']}:{current['PORT']}"
        f"/{current['NAME']}"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; import django; django.setup();"
            "from django.db import connection;"
            "c = connection.cursor(); c.execute('SHOW statement_timeout');"
            "print(c.fetchone()[0], settings.DATABASES['default']['OPTIONS']['pool']"
            "['max_size'])",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            **PRODUCTION_ENV,
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DB_CONNECTIONS": "pool",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30s", "30"]
