import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

from config.dotenv import load_env_file

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


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
        # No JIT: it compiled longer than a rare search term's query ran.
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


def test_connections_are_health_checked_before_use(settings):
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True


def test_check_deploy_passes_with_production_values(manage):
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("key", ["", "change-me", "django-insecure-abc"])
def test_production_start_without_real_secret_key_fails_with_one_line(manage, key):
    result = manage("check", **{**PRODUCTION_ENV, "SECRET_KEY": key})
    assert result.returncode != 0
    assert result.stderr.strip() == "ImproperlyConfigured: SECRET_KEY must be set"


def test_debug_start_without_secret_key_uses_a_development_key(manage):
    result = manage("check", **{**PRODUCTION_ENV, "SECRET_KEY": "", "DEBUG": "True"})
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


# --- .env under the environment ------------------------------------------------


def test_dotenv_fills_in_only_what_the_environment_lacks(tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text("API_TITLE=from-dotenv\nI14_ONLY_IN_DOTENV='quoted value'\n")
    monkeypatch.setenv("API_TITLE", "from-env")
    monkeypatch.setenv("I14_ONLY_IN_DOTENV", "")
    monkeypatch.delenv("I14_ONLY_IN_DOTENV")  # restored (to unset) afterwards

    added = load_env_file(dotenv)

    assert os.environ["API_TITLE"] == "from-env"
    assert added == {"I14_ONLY_IN_DOTENV": "quoted value"}


def test_make_run_reads_dotenv_under_the_environment(tmp_path):
    """The Makefile's own loading line, run by make, ends in the settings."""
    (tmp_path / ".env").write_text(
        "SECRET_KEY=dotenv-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz\n"
        "API_TITLE=from-dotenv\n"
        "PORT=9123\n"
    )
    probe = (
        "probe: ; @$(LOAD_DOTENV); echo $$PORT; $(PY) -c '"
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.API_TITLE); print(settings.SECRET_KEY)'"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SECRET_KEY", "DEBUG", "PORT", "API_TITLE"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONPATH=str(ROOT),
        API_TITLE="from-env",
    )

    result = subprocess.run(
        ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path)]
        + [f"PY={sys.executable}", "--eval", probe, "probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "9123",
        "from-env",
        "dotenv-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    ]


# --- CORS ----------------------------------------------------------------------

PREFLIGHTS = """
import json
from django.test import Client

def preflight(origin):
    response = Client().options(
        "/api/v1/products/",
        HTTP_HOST="api.example.com",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
        secure=True,
    )
    headers = {name.lower(): value for name, value in response.items()}
    return {"status": response.status_code, **headers}

print(json.dumps([preflight("http://localhost:3000"), preflight("https://evil.example")]))
"""


def test_cors_is_closed_by_default(client, settings):
    assert not settings.CORS_ALLOWED_ORIGINS
    response = client.options(
        "/api/v1/products/",
        HTTP_ORIGIN="http://localhost:3000",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
    )
    assert "Access-Control-Allow-Origin" not in response


def test_cors_preflight_answers_listed_origins_only(manage):
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        PREFLIGHTS,
        **PRODUCTION_ENV,
        CORS_ALLOWED_ORIGINS="http://localhost:3000,https://shop.example.com",
    )
    assert result.returncode == 0, result.stderr
    allowed, refused = json.loads(result.stdout)

    assert allowed["status"] == 200
    assert allowed["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in allowed["access-control-allow-methods"]
    assert {"authorization", "content-type", "if-match"} <= set(
        allowed["access-control-allow-headers"].split(", ")
    )
    assert "access-control-allow-credentials" not in allowed
    assert not any(name.startswith("access-control-") for name in refused)


# --- Error reporting -----------------------------------------------------------

RAISE_IN_A_VIEW = """
import sys, types
import sentry_sdk
from django.test import Client, override_settings
from django.urls import path

def boom(request):
    raise RuntimeError("sentry-probe")

urls = types.ModuleType("sentry_probe_urls")
urls.urlpatterns = [path("boom", boom)]
sys.modules["sentry_probe_urls"] = urls
with override_settings(ROOT_URLCONF="sentry_probe_urls"):
    status = Client(raise_request_exception=False).get(
        "/boom", HTTP_HOST="api.example.com", secure=True
    ).status_code
sentry_sdk.flush(timeout=10)
print(status)
"""


class _Envelopes(http.server.BaseHTTPRequestHandler):
    received: list[dict]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        # An envelope: a header line, then (item header, item payload) lines.
        lines = body.splitlines()
        self.received.extend(json.loads(line) for line in lines[2::2])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_sentry_dsn_reports_request_errors_through_the_django_integration(manage):
    _Envelopes.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Envelopes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/42"
        result = manage(
            "shell",
            "--no-imports",
            "-c",
            RAISE_IN_A_VIEW,
            **PRODUCTION_ENV,
            SENTRY_DSN=dsn,
        )
    finally:
        server.shutdown()
        server.server_close()

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "500"
    events = [item for item in _Envelopes.received if "exception" in item]
    assert len(events) == 1, _Envelopes.received
    error = events[0]["exception"]["values"][-1]
    assert (error["type"], error["value"]) == ("RuntimeError", "sentry-probe")
    # Caught by the Django integration, not reported by hand.
    assert error["mechanism"] == {"type": "django", "handled": False}
    assert "django" in events[0]["sdk"]["integrations"]


def test_without_sentry_dsn_nothing_is_imported(settings):
    # This process runs the settings without SENTRY_DSN, like any unset deployment.
    assert settings.SENTRY_DSN == ""
    assert "sentry_sdk" not in sys.modules
