import json
import logging
import uuid

import pytest
from django.db import connection
from django.test import Client

from config.logging import JSONFormatter
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def test_every_response_carries_a_generated_request_id_and_process_time(client):
    response = client.get("/healthz")

    assert len(response["X-Request-ID"]) == 32
    uuid.UUID(response["X-Request-ID"])
    assert float(response["X-Process-Time"]) >= 0


def test_a_sane_incoming_request_id_is_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="edge-7f3a.42:1")

    assert response["X-Request-ID"] == "edge-7f3a.42:1"


@pytest.mark.parametrize("bad", ["a b", "x" * 129, "<script>", "id\u00e9"])
def test_an_insane_incoming_request_id_is_replaced(client, bad):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=bad)

    assert response["X-Request-ID"] != bad
    uuid.UUID(response["X-Request-ID"])


def test_error_responses_carry_the_headers_too(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert "X-Request-ID" in response
    assert "X-Process-Time" in response


class _JSONCapture(logging.Handler):
    """Format records as they are emitted, as the console handler does."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JSONFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def of(self, logger: str) -> list[dict]:
        return [line for line in self.lines if line["logger"] == logger]


@pytest.fixture
def json_log():
    handler = _JSONCapture()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def test_each_request_is_logged_as_one_json_line_with_context(client, json_log):
    response = client.get("/healthz?token=secret-value", HTTP_X_REQUEST_ID="req-1")

    lines = json_log.of("config.request")
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-1" == response["X-Request-ID"]
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert line["duration"] >= 0
    assert "user_id" not in line
    assert "secret-value" not in json.dumps(line)


def test_the_log_line_names_the_signed_in_user(admin_client, admin_user, json_log):
    admin_client.get("/admin/")

    lines = json_log.of("config.request")
    assert lines[-1]["user_id"] == admin_user.pk
    assert lines[-1]["status"] == 200


def test_the_log_line_names_the_jwt_user(auth_client, user, json_log):
    response = auth_client(user).get("/api/v1/users/me/")

    assert response.status_code == 200
    assert json_log.of("config.request")[-1]["user_id"] == user.pk


def test_logging_the_request_costs_no_query(client, django_assert_num_queries):
    client.cookies["sessionid"] = "x" * 32
    with django_assert_num_queries(0):
        client.get("/healthz")


def test_log_lines_written_during_a_request_carry_its_id(client, json_log):
    client.get("/no-such-page/", HTTP_X_REQUEST_ID="req-404")

    (line,) = json_log.of("django.request")
    assert line["request_id"] == "req-404"
    assert line["status"] == 404
    assert line["level"] == "WARNING"


def test_the_request_id_is_not_carried_past_the_request(client, json_log):
    client.get("/healthz", HTTP_X_REQUEST_ID="req-done")
    logging.getLogger("config.test").warning("after the request")

    (line,) = json_log.of("config.test")
    assert "request_id" not in line


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_in_a_view_is_a_503_json_with_retry_after(client):
    client.cookies["sessionid"] = "x" * 32
    real = connection.settings_dict.copy()
    connection.close()
    connection.settings_dict["PORT"] = "1"
    try:
        response = client.get("/admin/login/")
    finally:
        connection.settings_dict.update(real)
        connection.close()

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == "database_unavailable"
    assert "X-Request-ID" in response


class QueryingMiddleware:
    """Touch the database before any view runs, as a session backend does."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return self.get_response(request)


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_in_a_middleware_is_a_503_too(settings):
    index = settings.MIDDLEWARE.index("config.middleware.RequestContextMiddleware")
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[: index + 1],
        "tests.config.test_middleware.QueryingMiddleware",
        *settings.MIDDLEWARE[index + 1 :],
    ]
    real = connection.settings_dict.copy()
    connection.close()
    connection.settings_dict["PORT"] = "1"
    try:
        response = Client(raise_request_exception=False).get("/healthz")
    finally:
        connection.settings_dict.update(real)
        connection.close()

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == "database_unavailable"


def test_api_requests_skip_sessions_and_messages(auth_client, user):
    client = auth_client(user)
    # A session cookie sent along is not even read: the API is JWT only.
    client.cookies["sessionid"] = "x" * 32
    response = client.get("/api/v1/users/me/")
    assert response.status_code == 200
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    request = response.wsgi_request
    assert not hasattr(request, "session") and not hasattr(request, "_messages")
    assert request.user == user  # set by DRF's authentication


def test_the_admin_keeps_sessions_csrf_and_messages(admin_user):
    client = Client(enforce_csrf_checks=True)
    token = client.get("/admin/login/").cookies["csrftoken"].value
    form = {"username": admin_user.email, "password": TEST_PASSWORD}
    assert client.post("/admin/login/", form).status_code == 403  # no CSRF token
    signed_in = client.post("/admin/login/", {**form, "csrfmiddlewaretoken": token})
    assert signed_in.status_code == 302
    assert "sessionid" in signed_in.cookies
    rotated = client.cookies["csrftoken"].value
    assert rotated != token
    added = client.post(
        "/admin/catalog/category/add/",
        # Signing in rotated the CSRF token.
        {"name": "Lamps", "slug": "lamps", "csrfmiddlewaretoken": rotated},
        follow=True,
    )
    assert added.status_code == 200
    # The success message went through the session's message storage.
    assert "was added successfully" in added.content.decode()
