"""Fixtures for the config tests: a private redis-server, manage.py runs."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from config.cache.backend import failures
from config.cache.namespaces import ledger

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a free TCP port: from TEST_PORT_RANGE ("18100-18199") if set."""
    low, _, high = os.environ.get("TEST_PORT_RANGE", "0-0").partition("-")
    for port in range(int(low), int(high or low) + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port in TEST_PORT_RANGE {low}-{high}")


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, protocol=2)
        for _ in range(200):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.025)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(settings) -> Iterator[RedisServer]:
    """Point the default cache at a private redis-server; killed at the end."""
    server = RedisServer()
    server.start()
    default = django_settings.CACHES["default"]
    settings.CACHES = {
        "default": {
            **default,
            "BACKEND": "config.cache.backend.FailOpenRedisCache",
            "LOCATION": server.url,
            "OPTIONS": {
                **default.get("OPTIONS", {}),
                "SOCKET_CONNECT_TIMEOUT": 0.25,
                "SOCKET_TIMEOUT": 0.25,
            },
        }
    }
    settings.CACHE_RETRY_AFTER = 0  # no circuit breaker unless a test sets one
    failures.reset()
    ledger.reset()
    yield server
    server.kill()
    failures.reset()
    ledger.reset()


@pytest.fixture
def database_url(django_db_setup) -> str:
    """Return the URL of the test database, for a child process."""
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return (
        f"postgres://{settings['USER']}{password}@{settings['HOST'] or 'localhost'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}"
    )


@pytest.fixture
def manage() -> Callable[..., subprocess.CompletedProcess]:
    """Return a runner of ``manage.py ARGS`` in a child process with config.settings.

    The child gets this environment without the test's Django settings, secret
    and debug flag, minus the names in *unset*, plus *env*.
    """

    def _manage(
        *args: str, unset: tuple[str, ...] = (), **env: str
    ) -> subprocess.CompletedProcess:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "SECRET_KEY", "DEBUG")) and k not in unset
        }
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return _manage
