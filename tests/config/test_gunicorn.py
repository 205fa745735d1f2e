import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
# What `python -m config.serve` runs when SERVER=gunicorn.
GUNICORN_COMMAND = [str(GUNICORN), "-c", "python:config.gunicorn", "config.wsgi"]
# The exact command of the Makefile's `run` target and the Dockerfile's CMD;
# SERVER in the environment picks granian (the default) or gunicorn.
SERVE_COMMAND = [sys.executable, "-m", "config.serve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def collected_static_root() -> str:
    """Run collectstatic once per test session, as a deploy does; return its root."""
    root = tempfile.mkdtemp(prefix="static-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env={
            **env,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "collectstatic-only-0123456789abcdefghijklmnopqrstuvwxyz",
            "DEBUG": "False",
            "STATIC_ROOT": root,
        },
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root


def server_env(**overrides: str) -> dict[str, str]:
    """Return a production-like environment for a server started by a test."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR"}
    }
    db = connection.settings_dict
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY="test-server-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        DEBUG="False",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="False",
        DATABASE_URL=(
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
            f"/{db['NAME']}"
        ),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        HOST="127.0.0.1",
        LOG_LEVEL="WARNING",
    )
    if "STATIC_ROOT" not in overrides:
        env["STATIC_ROOT"] = collected_static_root()
    env.update(overrides)
    return env


@contextmanager
def app_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run `python -m config.serve` on a free port; yield its base URL."""
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            SERVE_COMMAND,
            cwd=BASE_DIR,
            env={**env, "PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 30):
    """Return (status, headers, body) of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def print_config(tmp_path: Path, **env: str) -> dict[str, str]:
    output = subprocess.run(
        [*GUNICORN_COMMAND[:3], "--print-config", "config.wsgi"],
        cwd=BASE_DIR,
        env=server_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), **env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    settings = {}
    for line in output.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = value.strip()
    return settings


def test_defaults_are_sync_workers_from_workers_env(tmp_path):
    config = print_config(tmp_path, WORKERS="3")

    assert config["worker_class"] == "sync"
    assert config["workers"] == "3"
    assert config["preload_app"] == "False"
    assert config["max_requests"] == "10000"
    assert config["max_requests_jitter"] == "1000"
    assert config["limit_request_line"] == "8190"
    assert config["limit_request_fields"] == "100"


def test_threaded_workers_are_selectable_by_env(tmp_path):
    config = print_config(
        tmp_path, GUNICORN_WORKER_CLASS="gthread", GUNICORN_THREADS="8"
    )

    assert config["worker_class"] == "gthread"
    assert config["threads"] == "8"


@pytest.mark.parametrize(("statement_ms", "expected"), [("30000", 40), ("5000", 15)])
def test_worker_timeout_sits_above_the_statement_timeout(
    tmp_path, statement_ms, expected
):
    config = print_config(tmp_path, DB_STATEMENT_TIMEOUT_MS=statement_ms)

    assert int(config["timeout"]) == expected > int(statement_ms) // 1000


def test_logs_and_access_lines_are_json(tmp_path):
    env = server_env(
        SERVER="gunicorn", WORKERS="1", GUNICORN_ACCESS_LOG="1", LOG_LEVEL="INFO"
    )
    log_path = tmp_path / "gunicorn.log"
    with app_server(env, log_path) as url:
        status, headers, _ = http_get(f"{url}/healthz", {"X-Request-ID": "gunicorn-1"})
    assert status == 200

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert access == [
        {
            **access[0],
            "method": "GET",
            "path": "/healthz",
            "status": 200,
            "request_id": "gunicorn-1",
        }
    ]
    app = [line for line in lines if line["logger"] == "config.request"]
    assert app[0]["request_id"] == "gunicorn-1"
    assert any(line["logger"] == "gunicorn.error" for line in lines)
