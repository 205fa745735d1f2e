import re
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from tests.factories import (
    TEST_PASSWORD,
    CategoryFactory,
    ProductFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-brand-new-passphrase-42"


def _bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def _me(access: str) -> int:
    return _bearer(access).get(reverse("api:user-me")).status_code


def _refresh(refresh: str):
    return APIClient().post(
        reverse("api:token-refresh"), {"refresh": refresh}, format="json"
    )


# --- Sign in -----------------------------------------------------------------


def test_sign_in_returns_a_working_pair(api_client, user):
    response = api_client.post(
        reverse("api:token-obtain"),
        {"email": user.email, "password": TEST_PASSWORD},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh"}
    assert _me(body["access"]) == 200


def test_sign_in_ignores_email_letter_case(api_client, user):
    response = api_client.post(
        reverse("api:token-obtain"),
        {"email": f"  {user.email.upper()}", "password": TEST_PASSWORD},
        format="json",
    )

    assert response.status_code == 200


def test_wrong_email_and_wrong_password_give_the_same_401(api_client, user):
    url = reverse("api:token-obtain")
    wrong_password = api_client.post(
        url, {"email": user.email, "password": "not-it-at-all"}, format="json"
    )
    wrong_email = api_client.post(
        url, {"email": "nobody@example.com", "password": TEST_PASSWORD}, format="json"
    )

    assert wrong_password.status_code == wrong_email.status_code == 401
    assert wrong_password.json() == wrong_email.json()


def test_inactive_user_cannot_sign_in(api_client):
    inactive = UserFactory(is_active=False)

    response = api_client.post(
        reverse("api:token-obtain"),
        {"email": inactive.email, "password": TEST_PASSWORD},
        format="json",
    )

    assert response.status_code == 401


def test_sign_in_without_fields_is_400(api_client):
    response = api_client.post(reverse("api:token-obtain"), {}, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"email", "password"}


def test_user_id_claim_round_trips_with_the_locked_pyjwt(tokens_for, user):
    access = tokens_for(user)["access"]

    payload = jwt.decode(
        access, settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=[settings.ALGORITHM]
    )

    assert payload["user_id"] == str(user.pk)
    assert payload["token_type"] == "access"
    assert _me(access) == 200


def test_sign_in_is_throttled_with_retry_after(api_client, user):
    url = reverse("api:token-obtain")
    body = {"email": user.email, "password": "wrong-password-here"}
    statuses = [
        api_client.post(url, body, format="json").status_code for _ in range(11)
    ]

    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    response = api_client.post(url, body, format="json")
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert "detail" in response.json()


def test_throttled_answers_carry_ratelimit_fields(api_client, user):
    url = reverse("api:token-obtain")
    body = {"email": user.email, "password": "wrong-password-here"}
    responses = [api_client.post(url, body, format="json") for _ in range(11)]

    first, refused = responses[0], responses[10]
    policy = '"login";q=10;w=60, "login-account";q=10;w=60'
    assert first.status_code == 401
    assert first["RateLimit-Policy"] == policy
    assert re.fullmatch(
        r'"login";r=9;t=\d+, "login-account";r=9;t=\d+', first["RateLimit"]
    )
    assert refused.status_code == 429
    assert refused["RateLimit-Policy"] == policy
    left = re.fullmatch(
        r'"login";r=0;t=(\d+), "login-account";r=0;t=(\d+)', refused["RateLimit"]
    )
    assert left, refused["RateLimit"]
    assert 1 <= int(left[1]) <= 60
    assert abs(int(left[1]) - int(refused["Retry-After"])) <= 1


def test_registration_answers_carry_ratelimit_fields(api_client):
    response = api_client.post(
        reverse("api:user-list"),
        {"email": "new@example.com", "username": "new", "password": NEW_PASSWORD},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response["RateLimit-Policy"] == '"register";q=20;w=3600'
    assert re.fullmatch(r'"register";r=19;t=\d+', response["RateLimit"])
    listing = api_client.get(reverse("api:user-list"))
    assert "RateLimit" not in listing  # not a throttled action


def test_login_throttle_ignores_forged_forwarded_for(api_client, user):
    url = reverse("api:token-obtain")
    statuses = [
        api_client.post(
            url,
            {"email": f"x{n}@example.com", "password": "wrong-password-here"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{n}",
        ).status_code
        for n in range(11)
    ]

    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429


def test_login_throttle_counts_per_account_across_addresses(api_client, user, settings):
    settings.NUM_PROXIES = 1
    url = reverse("api:token-obtain")
    body = {"email": user.email, "password": "wrong-password-here"}
    statuses = [
        api_client.post(
            url, body, format="json", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}"
        ).status_code
        for n in range(11)
    ]

    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429


# --- Access tokens -------------------------------------------------------------


def test_missing_token_is_401_with_www_authenticate(api_client):
    response = api_client.get(reverse("api:user-me"))

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_expired_access_token_is_401(user):
    token = AccessToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(hours=2))

    assert _me(str(token)) == 401


def test_alg_none_token_is_401(tokens_for, user):
    claims = jwt.decode(tokens_for(user)["access"], options={"verify_signature": False})
    forged = jwt.encode(claims, key=None, algorithm="none")

    assert _me(forged) == 401


def test_token_with_wrong_signature_is_401(tokens_for, user):
    claims = jwt.decode(tokens_for(user)["access"], options={"verify_signature": False})
    forged = jwt.encode(
        claims, key="another-secret-key-of-enough-length", algorithm="HS256"
    )

    assert _me(forged) == 401


def test_refresh_token_cannot_be_used_as_access(tokens_for, user):
    assert _me(tokens_for(user)["refresh"]) == 401


def test_garbage_bearer_token_is_401(api_client):
    assert _me("not.a.jwt") == 401


def test_authenticated_request_costs_one_query(
    tokens_for, user, django_assert_num_queries
):
    client = _bearer(tokens_for(user)["access"])

    with django_assert_num_queries(1):
        response = client.get(reverse("api:user-me"))

    assert response.status_code == 200


def test_deactivation_stops_access_tokens_at_once(
    tokens_for, auth_client, user, staff_user, django_capture_on_commit_callbacks
):
    access = tokens_for(user)["access"]
    assert _me(access) == 200
    assert _me(access) == 200  # the user is now kept by this process

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client(staff_user).delete(
            reverse("api:user-detail", args=[user.pk])
        )

    assert response.status_code == 204
    assert _me(access) == 401


def test_signed_in_reads_find_their_user_without_a_query(
    tokens_for, user, django_assert_num_queries
):
    product_url = reverse("api:product-detail", args=[ProductFactory().pk])
    client = _bearer(tokens_for(user)["access"])
    assert client.get(product_url)["X-Cache"] == "MISS"

    with django_assert_num_queries(0):
        response = client.get(product_url)

    assert response.status_code == 200
    assert response["X-Cache"] == "HIT"


@pytest.mark.parametrize(
    "change",
    [{"is_active": False}, {"is_staff": True}],
    ids=["deactivated", "made-staff"],
)
def test_a_committed_user_change_reaches_the_next_signed_in_read(
    tokens_for, user, change, django_capture_on_commit_callbacks
):
    access = tokens_for(user)["access"]
    client = _bearer(access)
    assert client.get(reverse("api:user-me")).json()["is_staff"] is False

    with django_capture_on_commit_callbacks(execute=True):
        User.objects.filter(pk=user.pk).update(**change)

    response = client.get(reverse("api:user-me"))
    if change.get("is_active") is False:
        assert response.status_code == 401
    else:
        assert response.json()["is_staff"] is True


def test_a_token_seen_before_still_expires(tokens_for, user, monkeypatch):
    access = tokens_for(user)["access"]
    assert _me(access) == 200  # its signature is now known to this process
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    later = timezone.now() + lifetime + timedelta(seconds=1)
    monkeypatch.setattr("rest_framework_simplejwt.tokens.aware_utcnow", lambda: later)

    assert _me(access) == 401


def test_a_token_with_one_changed_byte_is_refused_after_a_good_one(tokens_for, user):
    access = tokens_for(user)["access"]
    assert _me(access) == 200
    header, payload, signature = access.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    assert _me(f"{header}.{payload}.{flipped}") == 401


def test_account_writes_load_their_user_from_the_database(tokens_for, user):
    access = tokens_for(user)["access"]
    assert _me(access) == 200  # kept by this process
    # Not committed yet, so no namespace bump: only a query can see it.
    User.objects.filter(pk=user.pk).update(is_active=False)

    response = _bearer(access).patch(
        reverse("api:user-me"), {"username": "late"}, format="json"
    )

    assert response.status_code == 401


def test_product_writes_load_their_user_from_the_database(tokens_for, user):
    client = _bearer(tokens_for(user)["access"])
    category = CategoryFactory()
    url = reverse("api:product-list")
    body = {"name": "Kept", "price": "1.00", "category": category.pk}
    assert client.post(url, {**body, "sku": "MEMO-1"}, format="json").status_code == 201

    with CaptureQueriesContext(connection) as queries:
        response = client.post(url, {**body, "sku": "MEMO-2"}, format="json")

    assert response.status_code == 201, response.content
    assert len([q for q in queries if "accounts_user" in q["sql"]]) == 1


def test_a_committed_deactivation_stops_product_writes_at_once(
    tokens_for, auth_client, user, staff_user, django_capture_on_commit_callbacks
):
    access = tokens_for(user)["access"]
    product = ProductFactory(owner=user)
    url = reverse("api:product-detail", args=[product.pk])
    client = _bearer(access)
    assert client.patch(url, {"stock": 1}, format="json").status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client(staff_user).delete(
            reverse("api:user-detail", args=[user.pk])
        )
    assert response.status_code == 204

    assert client.patch(url, {"stock": 2}, format="json").status_code == 401
    response = client.post(reverse("api:product-list"), {}, format="json")
    assert response.status_code == 401


# --- Refresh -------------------------------------------------------------------


def test_refresh_rotates_and_the_old_token_stops_working(tokens_for, user):
    old = tokens_for(user)["refresh"]

    first = _refresh(old)
    assert first.status_code == 200
    pair = first.json()
    assert set(pair) == {"access", "refresh"}
    assert pair["refresh"] != old
    assert _me(pair["access"]) == 200

    reused = _refresh(old)
    assert reused.status_code == 401
    assert _refresh(pair["refresh"]).status_code == 200


def test_access_token_cannot_be_used_to_refresh(tokens_for, user):
    assert _refresh(tokens_for(user)["access"]).status_code == 401


def test_refresh_of_a_deactivated_user_is_401(tokens_for, user):
    refresh = tokens_for(user)["refresh"]
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert _refresh(refresh).status_code == 401


def test_refresh_of_a_deleted_user_is_401_not_500(tokens_for, user):
    refresh = tokens_for(user)["refresh"]
    user.delete()

    assert _refresh(refresh).status_code == 401


def test_refresh_token_of_a_deleted_user_minted_without_outstanding_row_is_401(user):
    refresh = str(RefreshToken.for_user(user))
    User.objects.filter(pk=user.pk).delete()

    assert _refresh(refresh).status_code == 401


def test_expired_refresh_token_is_401(user):
    token = RefreshToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(days=30))

    assert _refresh(str(token)).status_code == 401


def test_refresh_without_token_is_400():
    response = APIClient().post(reverse("api:token-refresh"), {}, format="json")

    assert response.status_code == 400


# --- Verify --------------------------------------------------------------------


def test_verify_accepts_a_valid_token_and_rejects_others(tokens_for, user):
    url = reverse("api:token-verify")
    access = tokens_for(user)["access"]

    assert APIClient().post(url, {"token": access}, format="json").status_code == 200
    bad = APIClient().post(url, {"token": access + "x"}, format="json")
    assert bad.status_code == 401


def test_verify_rejects_a_token_of_a_deactivated_user(tokens_for, user):
    access = tokens_for(user)["access"]
    User.objects.filter(pk=user.pk).update(is_active=False)

    response = APIClient().post(
        reverse("api:token-verify"), {"token": access}, format="json"
    )

    assert response.status_code == 401


# --- Logout --------------------------------------------------------------------


def test_logout_revokes_the_refresh_token(tokens_for, user):
    refresh = tokens_for(user)["refresh"]

    response = APIClient().post(
        reverse("api:logout"), {"refresh": refresh}, format="json"
    )

    assert response.status_code == 204
    assert _refresh(refresh).status_code == 401
    verify = APIClient().post(
        reverse("api:token-verify"), {"token": refresh}, format="json"
    )
    assert verify.status_code == 401


def test_logout_with_a_revoked_or_bogus_token_is_401(tokens_for, user):
    refresh = tokens_for(user)["refresh"]
    url = reverse("api:logout")
    APIClient().post(url, {"refresh": refresh}, format="json")

    assert APIClient().post(url, {"refresh": refresh}, format="json").status_code == 401
    assert APIClient().post(url, {"refresh": "junk"}, format="json").status_code == 401
    assert APIClient().post(url, {}, format="json").status_code == 400


# --- Password reset ------------------------------------------------------------


def _reset_link_parts() -> tuple[str, str]:
    assert len(mail.outbox) == 1
    match = re.search(r"uid=([\w-]+)&token=([\w-]+)", mail.outbox[0].body)
    assert match, mail.outbox[0].body
    return match.group(1), match.group(2)


def test_password_reset_round_trip(
    api_client, tokens_for, user, django_capture_on_commit_callbacks
):
    old_refresh = tokens_for(user)["refresh"]

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            reverse("api:password-reset"), {"email": user.email.upper()}, format="json"
        )
    assert response.status_code == 202
    assert mail.outbox[0].to == [user.email]
    uid, token = _reset_link_parts()

    confirm = api_client.post(
        reverse("api:password-reset-confirm"),
        {"uid": uid, "token": token, "new_password": NEW_PASSWORD},
        format="json",
    )
    assert confirm.status_code == 200

    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert _refresh(old_refresh).status_code == 401
    again = api_client.post(
        reverse("api:password-reset-confirm"),
        {"uid": uid, "token": token, "new_password": "yet-another-passphrase-7"},
        format="json",
    )
    assert again.status_code == 400
    assert "token" in again.json()
    signed_in = api_client.post(
        reverse("api:token-obtain"),
        {"email": user.email, "password": NEW_PASSWORD},
        format="json",
    )
    assert signed_in.status_code == 200


def test_password_reset_for_unknown_email_is_202_and_sends_nothing(
    api_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            reverse("api:password-reset"), {"email": "ghost@example.com"}, format="json"
        )

    assert response.status_code == 202
    assert mail.outbox == []


@pytest.mark.parametrize("email", [0, "0", None, ["a@example.com"], "not-an-address"])
def test_password_reset_for_something_not_an_address_is_400_and_sends_nothing(
    api_client, django_capture_on_commit_callbacks, email
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            reverse("api:password-reset"), {"email": email}, format="json"
        )

    assert response.status_code == 400
    assert list(response.json()) == ["email"]
    assert mail.outbox == []


def test_password_reset_confirm_rejects_weak_password(
    api_client, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        api_client.post(reverse("api:password-reset"), {"email": user.email})
    uid, token = _reset_link_parts()

    response = api_client.post(
        reverse("api:password-reset-confirm"),
        {"uid": uid, "token": token, "new_password": "password"},
        format="json",
    )

    assert response.status_code == 400
    assert "new_password" in response.json()
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)


@pytest.mark.parametrize(
    "body",
    [
        {"uid": "garbage", "token": "garbage", "new_password": NEW_PASSWORD},
        {"uid": "MQ", "token": "abc-def", "new_password": NEW_PASSWORD},
        {"uid": "", "token": "", "new_password": ""},
    ],
)
def test_password_reset_confirm_with_bad_link_is_400(api_client, user, body):
    response = api_client.post(
        reverse("api:password-reset-confirm"), body, format="json"
    )

    assert response.status_code == 400


def test_password_reset_is_throttled(api_client):
    url = reverse("api:password-reset")
    statuses = [
        api_client.post(url, {"email": "a@example.com"}, format="json").status_code
        for _ in range(6)
    ]

    assert statuses[:5] == [202] * 5
    assert statuses[5] == 429


# --- OpenAPI -----------------------------------------------------------------------


def test_schema_documents_the_accounts_endpoints_and_their_errors(api_client):
    response = api_client.get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )

    assert response.status_code == 200
    paths = response.json()["paths"]
    prefix = settings.API_PREFIX
    token = paths[f"{prefix}/auth/token/"]["post"]["responses"]
    assert {"200", "400", "401", "429"} <= set(token)
    detail = paths[f"{prefix}/users/{{id}}/"]
    assert {"401", "403", "404"} <= set(detail["patch"]["responses"])
    assert {"201", "400", "401", "403"} <= set(
        paths[f"{prefix}/users/bulk/"]["post"]["responses"]
    )


def test_swagger_ui_is_served_without_a_cdn(api_client):
    response = api_client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html
    assert "unpkg.com" not in html
    # The CSP allows only same-origin script files: no inline <script> blocks.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts
    assert all("src=" in attrs for attrs in scripts)
    init = re.search(r'<script src="([^"]*script=[^"]*)"', html).group(1)
    script = api_client.get(init.replace("&amp;", "&"))
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()
