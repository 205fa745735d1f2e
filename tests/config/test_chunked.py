"""Chunked request bodies and missing static files, on a served app (every server)."""

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.config.test_gunicorn import app_server, http_get, server_env

BODY_CAP = 4096
VERIFY = "/api/v1/auth/token/verify/"

SERVERS = {
    "granian-rsgi": {},
    "granian-asgi": {"SERVER_INTERFACE": "asgi"},
    "granian-wsgi": {"SERVER_INTERFACE": "wsgi"},
    "gunicorn": {"SERVER": "gunicorn"},
}


@pytest.fixture(scope="module", params=list(SERVERS))
def served(request, django_db_setup, tmp_path_factory) -> Iterator[str]:
    env = server_env(
        WORKERS="1", MAX_REQUEST_BODY_BYTES=str(BODY_CAP), **SERVERS[request.param]
    )
    log_path = tmp_path_factory.mktemp("chunked") / "server.log"
    with app_server(env, log_path) as url:
        yield url


def _post_chunked(url: str, chunks: list[bytes]) -> tuple[int, dict]:
    """POST *chunks* with Transfer-Encoding: chunked (no Content-Length)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(
            "POST",
            VERIFY,
            body=iter(chunks),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


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
        status, _, _ = http_get(f"{served}{path}")
        assert status == 200, path
