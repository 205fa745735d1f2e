"""docker-compose.yml, Dockerfile and nginx.conf, checked without Docker."""

import ipaddress
import json
import re

import pytest
import yaml
from django.core import mail
from django.core.management import call_command
from django.test import override_settings

from accounts.tasks import send_welcome_email
from tests.config.test_gunicorn import BASE_DIR, SERVE_COMMAND
from tests.factories import UserFactory

COMPOSE = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (BASE_DIR / "Dockerfile").read_text()
MAKEFILE = (BASE_DIR / "Makefile").read_text()
NGINX = (BASE_DIR / "docker" / "nginx.conf").read_text()
APP_ENV = SERVICES["api"]["environment"]
SERVE_ARGS = ["python", *SERVE_COMMAND[1:]]
WORKER_ARGS = ["python", "manage.py", "db_worker"]


def _dockerfile_instruction(name: str) -> str:
    # Joins continuation lines, then returns the last instruction of that name.
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line for line in text.splitlines() if line.startswith(name + " ")]
    return lines[-1][len(name) + 1 :].strip()


def _postgres_setting(name: str) -> str:
    command = SERVICES["postgres"]["command"]
    (value,) = [
        item.split("=", 1)[1] for item in command if item.startswith(name + "=")
    ]
    return value


def test_the_stack_has_its_services():
    assert set(SERVICES) == {"postgres", "redis", "init", "api", "worker", "nginx"}
    assert SERVICES["api"]["deploy"]["replicas"] == 4


def test_every_service_has_resource_limits():
    for name, service in SERVICES.items():
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0, name
        assert re.fullmatch(r"\d+[MG]", limits["memory"]), name


def test_api_and_worker_run_the_commands_the_tests_and_makefile_run():
    assert SERVICES["api"]["command"] == SERVE_ARGS
    assert json.loads(_dockerfile_instruction("CMD")) == SERVE_ARGS
    assert "$(PY) " + " ".join(SERVE_COMMAND[1:]) in MAKEFILE
    assert SERVICES["worker"]["command"] == WORKER_ARGS
    assert "$(MANAGE) db_worker" in MAKEFILE and "MANAGE := $(PY) manage.py" in MAKEFILE


def test_init_migrates_then_creates_the_first_superuser_from_the_environment():
    init = SERVICES["init"]
    script = init["command"][-1]
    assert script.index("manage.py migrate --noinput") < script.index("ensure_admin")
    assert {"ADMIN_EMAIL", "ADMIN_PASSWORD"} <= set(init["environment"])
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        condition = SERVICES[name]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully"


def test_postgres_and_redis_are_tuned_as_designed():
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert _postgres_setting("max_connections") == "200"
    assert _postgres_setting("shared_buffers") == "256MB"
    assert _postgres_setting("effective_cache_size") == "1GB"
    redis = SERVICES["redis"]["command"]
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert redis[redis.index("--maxmemory") + 1] == "256mb"
    assert redis[redis.index("--maxmemory-policy") + 1] == "allkeys-lru"


def test_connection_budget_stays_under_max_connections():
    """Replicas x workers x handler threads, plus worker and init, fit."""
    replicas = SERVICES["api"]["deploy"]["replicas"]
    workers = int(APP_ENV["WORKERS"])
    # One persistent connection per handler thread; /healthz, on the event
    # loop, never opens one.
    assert APP_ENV["DB_CONNECTIONS"] == "persistent"
    per_worker = int(APP_ENV["SERVER_THREADS"])
    budget = replicas * workers * per_worker + 1 + 1  # task worker, init
    reserved = 3  # PostgreSQL's superuser_reserved_connections
    assert budget <= int(_postgres_setting("max_connections")) - reserved


def test_the_api_runs_the_default_server_with_keep_alive_below_nginx():
    assert "SERVER" not in APP_ENV  # granian, as `make run` and the image
    # nginx drops an idle upstream connection before the server would.
    idle = re.search(r"upstream api \{[^}]*keepalive_timeout (\d+)s;", NGINX)
    assert idle and int(idle.group(1)) < 10  # SERVER_HEADER_TIMEOUT's default
    assert SERVICES["api"]["sysctls"]["net.ipv4.tcp_migrate_req"] == 1


def test_every_app_variable_is_read_by_settings_or_the_server():
    sources = "".join(
        (BASE_DIR / "config" / name).read_text()
        for name in ("settings.py", "gunicorn.py", "serve.py")
    )
    for name in APP_ENV:
        assert f'"{name}"' in sources, name


def test_metrics_are_open_to_the_internal_network_only_and_closed_at_nginx():
    subnet = ipaddress.ip_network(
        COMPOSE["networks"]["backend"]["ipam"]["config"][0]["subnet"]
    )
    allowed = [
        ipaddress.ip_network(n) for n in APP_ENV["METRICS_ALLOWED_NETWORKS"].split(",")
    ]
    assert subnet in allowed
    assert re.search(r"location = /metrics \{\s*return 404;", NGINX)


def test_nginx_balances_the_api_replicas_and_forwards_the_request_id():
    assert (
        "./docker/nginx.conf:/etc/nginx/nginx.conf:ro" in SERVICES["nginx"]["volumes"]
    )
    assert re.search(r"upstream api \{[^}]*server api:8000", NGINX)
    assert "proxy_pass http://api;" in NGINX
    assert "proxy_set_header X-Request-ID $req_id;" in NGINX
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in NGINX
    assert APP_ENV["NUM_PROXIES"] == "1"
    assert SERVICES["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_image_is_slim_non_root_with_static_files_and_a_healthcheck():
    stages = re.findall(r"^FROM (\S+) AS (\w+)", DOCKERFILE, re.MULTILINE)
    assert stages == [("python:3.13-slim", "build"), ("python:3.13-slim", "runtime")]
    assert _dockerfile_instruction("USER") not in {"root", "0"}
    assert "uv sync --frozen --no-dev" in DOCKERFILE
    assert "manage.py collectstatic --noinput" in DOCKERFILE
    assert "/healthz" in _dockerfile_instruction("HEALTHCHECK")
    ignored = (BASE_DIR / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "tests"} <= set(ignored)


# The worker closes its database connections between tasks, so the queue must
# really be committed.
@pytest.mark.django_db(transaction=True)
@override_settings(TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}})
def test_the_worker_command_sends_queued_emails():
    user = UserFactory()
    result = send_welcome_email.enqueue(user_id=user.pk)
    assert mail.outbox == []

    call_command(*WORKER_ARGS[2:], "--batch", "--no-startup-delay", "--no-reload")

    assert [message.to for message in mail.outbox] == [[user.email]]
    result.refresh()
    assert result.status == "SUCCESSFUL"
