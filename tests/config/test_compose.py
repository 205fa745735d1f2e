"""docker-compose.yml, Dockerfile and nginx.conf, checked without Docker."""

import ipaddress
import json
import os
import re
import subprocess
import sys

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
    assert [stage for _, stage in stages] == ["build", "runtime"]
    assert {image for image, _ in stages} == {"python:3.13.5-slim-bookworm"}
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


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def _graceful_timeout(environment: dict[str, str]) -> float:
    """Return config/gunicorn.py's graceful_timeout under *environment*."""
    env = {k: v for k, v in environment.items() if "${" not in str(v)}
    code = (
        "import runpy; print(runpy.run_path('config/gunicorn.py')['graceful_timeout'])"
    )
    result = subprocess.run(  # noqa: S603 - a fixed command
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def test_docker_waits_for_requests_in_flight_before_killing_the_api():
    graceful = _graceful_timeout(APP_ENV)
    assert graceful > 0
    for name in ("api", "worker"):
        # Docker's default is 10 s; SIGKILL must come after the server's own
        # graceful shutdown, with a margin.
        assert _seconds(SERVICES[name]["stop_grace_period"]) >= graceful + 5, name


def test_postgres_has_shared_memory_for_parallel_queries():
    size = SERVICES["postgres"]["shm_size"]
    number, unit = re.fullmatch(r"(\d+)([kmg])b?", size.lower()).groups()
    megabytes = int(number) * {"k": 1 / 1024, "m": 1, "g": 1024}[unit]
    assert megabytes >= 128  # Docker's default is 64 MB


def test_every_image_is_pinned_to_an_exact_version():
    images = [s["image"] for s in SERVICES.values() if "build" not in s]
    images += re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    images += re.findall(r"COPY --from=(\S+:\S+)", DOCKERFILE)
    assert len(images) == 6
    for image in images:
        # name:MAJOR.MINOR[.PATCH][-variant], never latest or a major alone.
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?(-[\w.-]+)?", image), image
        if image.startswith(("python:", "redis:", "nginx:", "ghcr.io/")):
            assert re.search(r":\d+\.\d+\.\d+", image), image


def test_healthcheck_probes_the_port_the_server_listens_on():
    healthcheck = _dockerfile_instruction("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "8000" not in healthcheck.replace("'PORT', '8000'", "")
    assert "os.environ.get('PORT'" in healthcheck
    assert re.search(r"^ENV [^\n]*PORT=8000", re.sub(r"\\\n\s*", " ", DOCKERFILE), re.M)


def test_nginx_keeps_the_tls_terminators_scheme_and_the_clients_host():
    assert re.search(
        r"map \$http_x_forwarded_proto \$proxy_x_forwarded_proto \{\s*"
        r"default \$http_x_forwarded_proto;\s*'' \$scheme;\s*\}",
        NGINX,
    )
    assert "proxy_set_header X-Forwarded-Proto $proxy_x_forwarded_proto;" in NGINX
    assert "X-Forwarded-Proto $scheme" not in NGINX
    # $host drops the port, which breaks CSRF origin checks on other ports.
    assert "proxy_set_header Host $http_host;" in NGINX


def test_nginx_resolves_the_api_replicas_again_as_they_scale():
    assert re.search(r"^\s*resolver 127\.0\.0\.11 [^;]*valid=\d+s", NGINX, re.M)
    upstream = re.search(r"upstream api \{([^}]*)\}", NGINX).group(1)
    assert re.search(r"^\s*zone api \d+k;", upstream, re.M)
    assert re.search(r"^\s*server api:8000 resolve\b", upstream, re.M)
    # `resolve` in an upstream needs nginx 1.27.3 or later.
    version = re.search(r"nginx:(\d+)\.(\d+)\.(\d+)", SERVICES["nginx"]["image"])
    assert tuple(map(int, version.groups())) >= (1, 27, 3)
