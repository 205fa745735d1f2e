"""Chunked request bodies and missing static files, on a served app (every server)."""

import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.config.test_gunicorn import app_server, http_get, server_env

# The served app uses the test database, which is set up for marked tests only.
pytestmark = pytest.mark.django_db

BODY_CAP = 4096
VERIFY = "/api/v1/auth/token/verify/"

# The default (granian with the RSGI front) and the WSGI fallback, whose
# chunked bodies config.wsgi.ChunkedBodyMiddleware reads.
SERVERS = {"granian": {}, "gunicorn": {"SERVER": "gunicorn"}}


@pytest.fixture(scope="module", params=list(SERVERS))
def served(request, django_db_setup, tmp_path_factory) -> Iterator[str]:
    env = server_env(
        WORKERS="1", MAX_REQUEST_BODY_BYTES=str(BODY_CAP), **SERVERS[request.param]
    )
    log_path = tmp_path_factory.mktemp("chunked") / "server.log"
    with app_server(env, log_path) as url:
        yield url


def _post_chunked(url: str, chunks: list[bytes]) -> tuple[int, dict]:
    """POST *chunks* with Transfer-Encoding: chunked (no Content-Length).

    The request goes out in one write: a server may answer 413 and close
    before a client sending chunk by chunk has finished.
    """
    parts = urlsplit(url)
    head = (
        f"POST {VERIFY} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def test_a_chunked_json_body_is_parsed(served):
    # A token that is no token: 401 means the body was read (an empty one is 400).
    status, body = _post_chunked(served, [b'{"tok', b'en": "not-a', b'-token"}'])

    assert status == 401, body
    assert body["code"] == "token_not_valid"


def test_a_chunked_body_over_the_cap_is_413(served):
    status, body = _post_chunked(served, [b'{"token": "', b"x" * BODY_CAP, b'"}'])

    assert status == 413
    assert body == {"detail": "Request body too large."}


def test_a_malformed_chunked_body_is_400_saying_so(served):
    status, body = _post_chunked(served, [b'{"token": '])

    assert status == 400
    assert body["detail"].startswith("JSON parse error")


def test_without_collectstatic_readyz_fails_naming_static_files(
    django_db_setup, tmp_path
):
    env = server_env(WORKERS="1", STATIC_ROOT=str(tmp_path))
    with app_server(env, tmp_path / "server.log") as url:
        status, _, body = http_get(f"{url}/readyz")

    assert status == 503
    assert "collectstatic" in json.loads(body)["static"]


def test_with_collected_static_files_the_admin_and_docs_pages_load(served):
    for path in ("/readyz", "/admin/login/", "/api/docs/"):
        status, _, body = http_get(f"{served}{path}")
        assert status == 200, (path, body[:300])
