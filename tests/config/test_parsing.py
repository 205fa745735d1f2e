import json

import pytest
from django.conf import settings
from django.test import RequestFactory
from django.urls import reverse
from django.utils.module_loading import import_string

from accounts.models import User

pytestmark = pytest.mark.django_db

STRONG = "plum-kettle-orbit-93"


def _post_raw(client, body: bytes | str, content_type: str = "application/json"):
    return client.generic(
        "POST", reverse("api:user-list"), body, content_type=content_type
    )


def _assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body
    return body


def test_deeply_nested_json_is_400_not_500(api_client):
    body = "[" * 1000 + "]" * 1000

    error = _assert_json_error(_post_raw(api_client, body), 400)

    assert "nesting" in error["detail"]


def test_moderately_nested_json_beyond_the_depth_limit_is_400(api_client):
    body = json.dumps({"email": "a@example.com", "x": json.loads("[" * 40 + "]" * 40)})

    error = _assert_json_error(_post_raw(api_client, body), 400)

    assert "nesting" in error["detail"]


def test_body_over_the_cap_is_413(api_client, settings):
    settings.MAX_REQUEST_BODY_BYTES = 1_000
    body = json.dumps({"email": "a@example.com", "password": "x" * 2_000})

    _assert_json_error(_post_raw(api_client, body), 413)
    assert not User.objects.exists()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_400(api_client, constant):
    body = '{"email": "a@example.com", "password": ' + constant + "}"

    _assert_json_error(_post_raw(api_client, body), 400)


@pytest.mark.parametrize(
    "body",
    [
        r'{"email": "a\u0000@example.com", "password": "plum-kettle-orbit-93"}',
        r'{"email": "a@example.com", "password": "plum-kettle\u0000-93"}',
        r'{"email\u0000": "a@example.com", "password": "plum-kettle-orbit-93"}',
        r'{"email": "a@example.com", "password": "plum-kettle-\ud800-93"}',
        r'{"email": "a@example.com", "password": "plum-kettle-\udfff-93"}',
    ],
)
def test_nul_bytes_and_lone_surrogates_are_400(api_client, body):
    _assert_json_error(_post_raw(api_client, body), 400)
    assert not User.objects.exists()


def test_a_valid_surrogate_pair_is_accepted(api_client):
    body = r'{"email": "emoji@example.com", "password": "plum-kettle-\ud83d\ude00-93"}'

    response = _post_raw(api_client, body)

    assert response.status_code == 201, response.content
    assert User.objects.get(email="emoji@example.com").check_password(
        "plum-kettle-\U0001f600-93"
    )


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"email": "a@example.com",}', b"\xff\xfe\xfa", b'"\xc3\x28"'],
)
def test_malformed_json_is_400(api_client, body):
    _assert_json_error(_post_raw(api_client, body), 400)


def test_unsupported_charset_is_400(api_client):
    response = _post_raw(api_client, b"{}", "application/json; charset=bz2_codec")

    _assert_json_error(response, 400)


def test_non_json_content_type_is_415(api_client):
    response = _post_raw(api_client, "email=a@example.com", "text/plain")

    _assert_json_error(response, 415)


def test_json_body_that_is_not_an_object_is_400(api_client):
    _assert_json_error(_post_raw(api_client, "[1, 2, 3]"), 400)


def test_unknown_path_under_the_api_prefix_is_a_json_404(api_client):
    prefix = settings.API_PREFIX

    get = _assert_json_error(api_client.get(f"{prefix}/nowhere/"), 404)
    post = _assert_json_error(api_client.post(f"{prefix}/nowhere/", {}), 404)

    assert get == post == {"detail": "Not found."}


def test_missing_trailing_slash_gets_a_json_404_with_a_hint(api_client):
    error = _assert_json_error(api_client.get(f"{settings.API_PREFIX}/users"), 404)

    assert f"{settings.API_PREFIX}/users/" in error["detail"]


def test_wrong_method_is_a_json_405(auth_client, user):
    response = auth_client(user).delete(reverse("api:user-list"))

    _assert_json_error(response, 405)


def test_disallowed_host_under_the_api_is_a_json_400(client):
    response = client.get(reverse("api:user-list"), HTTP_HOST="evil.example")

    _assert_json_error(response, 400)


def test_server_error_handler_answers_json_under_the_api():
    handler = import_string(import_string("config.urls.handler500"))
    request = RequestFactory().get(f"{settings.API_PREFIX}/users/")

    response = handler(request)

    assert response.status_code == 500
    assert json.loads(response.content) == {"detail": "Internal server error."}


def test_server_error_handler_keeps_html_outside_the_api():
    handler = import_string(import_string("config.urls.handler500"))

    response = handler(RequestFactory().get("/admin/"))

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


def test_nul_byte_in_a_query_parameter_is_400_not_500(auth_client, user):
    response = auth_client(user).get(reverse("api:user-list"), {"search": "a\x00b"})

    _assert_json_error(response, 400)
