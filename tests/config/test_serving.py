"""The default server (`python -m config.serve`): keep-alive, slow clients, probes."""

import asyncio
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg
import pytest
import uvloop
from django.conf import settings
from django.db import connection
from granian._loops import loops
from granian.constants import Interfaces

from config.serve import granian_options, max_requests_offset, staggered_births
from config.serving import ServingApp
from tests.config.test_gunicorn import app_server, http_get, server_env

# One worker with the default handler threads (SERVER_THREADS: 1): a handful
# of requests occupies them all.
THREADS = 1


@pytest.fixture(scope="module")
def served(django_db_setup, tmp_path_factory) -> Iterator[str]:
    """Serve the app as `make run` does, on the test database; yield its URL."""
    env = server_env(WORKERS="1")
    env.pop("SERVER_THREADS", None)
    log_path = tmp_path_factory.mktemp("serving") / "server.log"
    with app_server(env, log_path) as url:
        yield url


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def test_two_requests_share_one_connection(served):
    conn = http.client.HTTPConnection(*_address(served), timeout=10)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        assert first.read() == b'{"status": "ok"}'
        assert first.getheader("Connection", "").lower() != "close"
        sock = conn.sock
        assert sock is not None

        conn.request("GET", "/healthz", headers={"X-Request-ID": "second-1"})
        second = conn.getresponse()

        assert second.status == 200
        assert second.getheader("X-Request-ID") == "second-1"
        second.read()
        assert conn.sock is sock  # http.client reconnects when the server closes
    finally:
        conn.close()


def test_a_request_body_reaches_the_app_and_a_head_answer_has_none(served):
    conn = http.client.HTTPConnection(*_address(served), timeout=10)
    try:
        body = json.dumps({"email": "not-an-email", "username": "u" * 5000})
        conn.request(
            "POST", "/api/v1/users/", body, {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        errors = json.loads(response.read())
        conn.request("HEAD", "/healthz")
        head = conn.getresponse()
        head_body = head.read()
    finally:
        conn.close()

    assert response.status == 400
    assert {"username", "password"} <= set(errors)  # the 5,000-byte name too
    assert (head.status, head_body) == (200, b"")


class _Drip:
    """Clients that send a request's headers one byte at a time, never finishing."""

    def __init__(self, address: tuple[str, int], clients: int) -> None:
        self.sockets = [socket.create_connection(address, timeout=5)]
        self.sockets += [
            socket.create_connection(address, timeout=5) for _ in range(clients - 1)
        ]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        header = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 200
        for byte in header:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.sendall(bytes([byte]))
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> "_Drip":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def test_clients_dripping_headers_do_not_stop_healthz(served):
    with _Drip(_address(served), clients=10):
        time.sleep(1)  # every dripping client is connected and sending
        answers = [http_get(f"{served}/healthz", timeout=1) for _ in range(3)]

    assert [(status, body) for status, _, body in answers] == [
        (200, b'{"status": "ok"}')
    ] * 3


# The marker makes pytest-django create the test database the server uses.
@pytest.mark.django_db
def test_healthz_answers_while_every_handler_waits_on_a_table_lock(served):
    db = connection.settings_dict
    dsn = f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    paths = [f"/api/v1/products/{900_000_000 + i}/" for i in range(THREADS * 3)]
    with (
        psycopg.connect(f"{dsn}/{db['NAME']}") as blocker,
        psycopg.connect(f"{dsn}/{db['NAME']}", autocommit=True) as watcher,
        ThreadPoolExecutor(max_workers=len(paths)) as pool,
    ):
        blocker.execute("LOCK TABLE catalog_product IN ACCESS EXCLUSIVE MODE")
        blocked = [
            pool.submit(http_get, f"{served}{path}", timeout=60) for path in paths
        ]
        # Every handler thread is then waiting for the lock.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        deadline = time.monotonic() + 10
        while watcher.execute(waiting).fetchone()[0] < THREADS:
            assert time.monotonic() < deadline, "the product requests never blocked"
            time.sleep(0.05)

        status, headers, body = http_get(f"{served}/healthz", timeout=1)
        still_blocked = sum(not future.done() for future in blocked)

        blocker.rollback()
        finished = [future.result()[0] for future in blocked]

    assert (status, body) == (200, b'{"status": "ok"}')
    assert headers["Content-Type"] == "application/json"
    assert still_blocked == len(paths)
    assert finished == [404] * len(paths)


def test_the_default_is_single_threaded_processes_on_uvloop(monkeypatch):
    for name in ("WORKERS", "SERVER_THREADS", "SERVER_INTERFACE"):
        monkeypatch.delenv(name, raising=False)
    options = granian_options()
    loop = loops.get(options["loop"].value)

    assert options["workers"] == 4
    assert options["interface"] == Interfaces("rsgi")  # the front, with its threads
    assert settings.SERVER_THREADS == THREADS == 1
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_granian_workers_are_replaced_one_lifetime_quarter_apart(monkeypatch):
    monkeypatch.delenv("SERVER_WORKER_LIFETIME", raising=False)
    lifetime = granian_options()["workers_lifetime"]

    births = staggered_births(100.0, 4, lifetime)

    assert lifetime == 3600
    # A worker is replaced `lifetime` after its birth: 3600, 4500, 5400, 6300 s.
    assert [birth + lifetime for birth in births] == [3700, 4600, 5500, 6400]


def test_a_zero_lifetime_keeps_granian_workers(monkeypatch):
    monkeypatch.setenv("SERVER_WORKER_LIFETIME", "0")

    assert granian_options()["workers_lifetime"] is None


def test_gunicorn_first_workers_get_request_limits_a_quarter_apart():
    offsets = [max_requests_offset(age, 4, 10_000) for age in range(1, 9)]

    # Replacements serve the plain limit, so recycling stays a quarter apart.
    assert offsets == [0, 2_500, 5_000, 7_500, 0, 0, 0, 0]


@pytest.mark.django_db
def test_a_stopping_server_finishes_the_requests_it_started(tmp_path):
    db = connection.settings_dict
    dsn = f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    env = server_env(WORKERS="1", SERVER_THREADS=str(THREADS))
    with (
        psycopg.connect(f"{dsn}/{db['NAME']}") as blocker,
        ThreadPoolExecutor(max_workers=THREADS) as pool,
    ):
        with app_server(env, tmp_path / "server.log") as url:
            blocker.execute("LOCK TABLE catalog_product IN ACCESS EXCLUSIVE MODE")
            paths = [f"/api/v1/products/{800_000_000 + i}/" for i in range(THREADS)]
            started = [
                pool.submit(http_get, f"{url}{path}", timeout=30) for path in paths
            ]
            time.sleep(1)  # both requests are in the handler threads
            threading.Timer(2, blocker.rollback).start()
        # Leaving app_server sent SIGTERM and waited for the server to exit.
        answers = [future.result()[0] for future in started]

    assert answers == [404] * THREADS


def _asgi_call(app: ServingApp, method: str, body: bytes = b"") -> list[dict]:
    scope = {
        "type": "http",
        "method": method,
        "path": "/big",
        "query_string": b"",
        "headers": [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_a_large_answer_streams_and_an_app_error_is_a_json_500():
    chunk = b"x" * 700_000

    def wsgi_app(environ, start_response):
        if environ["wsgi.input"].read() == b"boom":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [chunk, chunk, chunk]

    app = ServingApp(wsgi_app, threads=1)
    try:
        streamed = _asgi_call(app, "GET")
        head = _asgi_call(app, "HEAD")
        failed = _asgi_call(app, "POST", b"boom")
    finally:
        app.executor.shutdown()

    assert streamed[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in streamed[1:]) == chunk * 3
    assert len(streamed) > 3 and streamed[-1]["more_body"] is False
    assert head[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in head[1:]) == b""
    assert failed[0]["status"] == 500
    assert json.loads(failed[1]["body"]) == {"detail": "Internal server error."}


def test_a_dripped_upload_over_the_cap_holds_no_handler_thread(served):
    # Django streams a multipart body (the admin's login form reads it for its
    # CSRF token): handed to the one handler thread, a client sending 50 MB
    # slowly would keep every other request of the worker waiting.
    sock = socket.create_connection(_address(served), timeout=10)
    try:
        sock.sendall(
            b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=XX\r\n"
            b"Cookie: csrftoken=abcdefghijklmnopqrstuvwxyzABCDEF\r\n"
            b"Content-Length: 50000000\r\n\r\n"
            b'--XX\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n'
            + b"x"
            * 1000
        )
        time.sleep(0.5)
        started = time.monotonic()
        # /readyz runs in the handler thread (503 here: no static files).
        status, _, _ = http_get(f"{served}/readyz", timeout=10)
        waited = time.monotonic() - started
        upload = http.client.HTTPResponse(sock)
        upload.begin()
        answer = json.loads(upload.read())
    finally:
        sock.close()

    assert status in {200, 503}
    assert waited < 3
    assert (upload.status, answer) == (413, {"detail": "Request body too large."})
