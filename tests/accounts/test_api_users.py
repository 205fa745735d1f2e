import pytest
from django.core import mail
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

STRONG = "plum-kettle-orbit-93"


def _register(client: APIClient, **body):
    return client.post(reverse("api:user-list"), body, format="json")


def _detail(user: User) -> str:
    return reverse("api:user-detail", args=[user.pk])


def _sign_in(email: str, password: str):
    return APIClient().post(
        reverse("api:token-obtain"),
        {"email": email, "password": password},
        format="json",
    )


# --- Registration -------------------------------------------------------------


def test_register_creates_an_active_user_and_sends_welcome_email_after_commit(
    api_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = _register(
            api_client, email="  New.Person@EXAMPLE.com ", password=STRONG
        )
        assert mail.outbox == []

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["email"] == "New.Person@example.com"
    assert body["username"] == "New.Person"
    assert body["is_active"] is True
    assert "password" not in body
    assert mail.outbox[0].to == ["New.Person@example.com"]
    user = User.objects.get(pk=body["id"])
    assert user.check_password(STRONG)
    assert _sign_in("new.person@example.com", STRONG).status_code == 200


def test_register_ignores_privilege_fields(api_client):
    other = UserFactory()
    response = _register(
        api_client,
        email="sneaky@example.com",
        password=STRONG,
        is_staff=True,
        is_superuser=True,
        is_active=False,
        id=other.pk,
        groups=[1],
    )

    assert response.status_code == 201
    user = User.objects.get(email="sneaky@example.com")
    assert (user.is_staff, user.is_superuser, user.is_active) == (False, False, True)
    assert user.pk != other.pk


def test_duplicate_email_in_other_case_is_400(api_client, user):
    response = _register(api_client, email=user.email.upper(), password=STRONG)

    assert response.status_code == 400
    assert list(response.json()) == ["email"]
    assert User.objects.count() == 1


def test_duplicate_username_is_400(api_client, user):
    response = _register(
        api_client, email="fresh@example.com", username=user.username, password=STRONG
    )

    assert response.status_code == 400
    assert "username" in response.json()


def test_derived_username_that_is_taken_gets_a_suffix(api_client):
    UserFactory(username="sam")

    response = _register(api_client, email="sam@example.org", password=STRONG)

    assert response.status_code == 201
    assert response.json()["username"].startswith("sam-")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1!", "too short"),
        ("password123", "too common"),
        ("8675309123", "numeric"),
        ("walterwhite1", "similar to the email"),
    ],
)
def test_weak_password_is_400(api_client, password, reason):
    response = _register(
        api_client, email="walterwhite1@example.com", password=password
    )

    assert response.status_code == 400, reason
    assert "password" in response.json()
    assert not User.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"password": STRONG},
        {"email": "not-an-email", "password": STRONG},
        {"email": "a@example.com"},
        {"email": 42, "password": STRONG},
        {"email": "a@example.com", "password": STRONG, "username": "has space"},
        {"email": f"{'a' * 250}@example.com", "password": STRONG},
    ],
)
def test_invalid_registration_is_400(api_client, body):
    response = _register(api_client, **body)

    assert response.status_code == 400
    assert not User.objects.exists()


def test_failure_to_enqueue_the_welcome_email_does_not_fail_registration(
    api_client, settings, django_capture_on_commit_callbacks
):
    # A backend that serves no "default" queue: enqueue() raises InvalidTask.
    settings.TASKS = {
        "default": {
            "BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
            "QUEUES": ["elsewhere"],
        }
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = _register(api_client, email="calm@example.com", password=STRONG)

    assert response.status_code == 201
    assert mail.outbox == []
    assert User.objects.filter(email="calm@example.com").exists()


def test_registration_is_throttled(api_client, settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "register": "2/hour"},
    }
    statuses = [
        _register(api_client, email=f"r{n}@example.com", password=STRONG).status_code
        for n in range(3)
    ]

    assert statuses == [201, 201, 429]


# --- Read ---------------------------------------------------------------------


def test_anonymous_cannot_list_or_read_users(api_client, user):
    assert api_client.get(reverse("api:user-list")).status_code == 401
    assert api_client.get(_detail(user)).status_code == 401
    assert api_client.get(reverse("api:user-me")).status_code == 401


def test_list_shows_active_users_without_others_emails(auth_client, user, other_user):
    UserFactory(is_active=False)

    response = auth_client(user).get(reverse("api:user-list"))

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    by_id = {row["id"]: row for row in body["results"]}
    assert by_id[user.pk]["email"] == user.email
    assert by_id[user.pk]["is_staff"] is False
    assert "email" not in by_id[other_user.pk]
    assert "is_staff" not in by_id[other_user.pk]


def test_staff_list_includes_inactive_users_and_emails(auth_client, staff_user, user):
    inactive = UserFactory(is_active=False)

    body = auth_client(staff_user).get(reverse("api:user-list")).json()

    by_id = {row["id"]: row for row in body["results"]}
    assert set(by_id) == {staff_user.pk, user.pk, inactive.pk}
    assert by_id[inactive.pk]["email"] == inactive.email


def test_list_is_newest_first_and_orders_by_created_at(auth_client, user):
    UserFactory.create_batch(2)
    client = auth_client(user)

    newest = [r["id"] for r in client.get(reverse("api:user-list")).json()["results"]]
    oldest = [
        r["id"]
        for r in client.get(
            reverse("api:user-list"), {"ordering": "created_at"}
        ).json()["results"]
    ]

    assert newest == list(reversed(oldest))
    assert (
        client.get(reverse("api:user-list"), {"ordering": "password"}).status_code
        == 400
    )


def test_search_matches_username_prefix_and_email_only_for_staff(
    auth_client, user, staff_user
):
    UserFactory(username="zelda", email="link@hyrule.example")

    mine = auth_client(user).get(reverse("api:user-list"), {"search": "zel"}).json()
    by_email = auth_client(user).get(reverse("api:user-list"), {"search": "LINK@"})
    as_staff = auth_client(staff_user).get(
        reverse("api:user-list"), {"search": "LINK@"}
    )

    assert [r["username"] for r in mine["results"]] == ["zelda"]
    assert by_email.json()["count"] == 0
    assert [r["username"] for r in as_staff.json()["results"]] == ["zelda"]


@pytest.mark.parametrize("limit", [1, 100])
def test_list_query_count_is_constant(
    auth_client, user, limit, django_assert_num_queries
):
    UserFactory.create_batch(5)
    client = auth_client(user)

    # 1: the caller, 2: the count, 3: the page.
    with django_assert_num_queries(3):
        response = client.get(reverse("api:user-list"), {"limit": limit})

    assert response.status_code == 200
    assert len(response.json()["results"]) == min(limit, 6)


def test_list_page_size_is_capped_at_100(auth_client, user):
    response = auth_client(user).get(reverse("api:user-list"), {"limit": 1000})

    assert response.status_code == 200
    assert "limit=100" in (response.json()["next"] or "limit=100")


def test_detail_hides_email_from_others_and_shows_it_to_owner_and_staff(
    auth_client, user, other_user, staff_user
):
    assert "email" not in auth_client(other_user).get(_detail(user)).json()
    assert auth_client(user).get(_detail(user)).json()["email"] == user.email
    assert auth_client(staff_user).get(_detail(user)).json()["email"] == user.email


def test_detail_of_missing_or_inactive_user_is_404_for_non_staff(
    auth_client, user, staff_user
):
    inactive = UserFactory(is_active=False)
    client = auth_client(user)

    assert client.get(reverse("api:user-detail", args=[999_999])).status_code == 404
    assert client.get(reverse("api:user-detail", args=["abc"])).status_code == 404
    assert client.get(reverse("api:user-detail", args=[10**30])).status_code == 404
    assert client.get(_detail(inactive)).status_code == 404
    assert auth_client(staff_user).get(_detail(inactive)).status_code == 200


def test_me_returns_own_profile(auth_client, user):
    response = auth_client(user).get(reverse("api:user-me"))

    assert response.status_code == 200
    assert response.json()["id"] == user.pk
    assert response.json()["email"] == user.email


# --- Update -------------------------------------------------------------------


def test_patch_me_changes_username_and_email(auth_client, user):
    response = auth_client(user).patch(
        reverse("api:user-me"),
        {"username": "renamed", "email": "Renamed@Example.COM"},
        format="json",
    )

    assert response.status_code == 200, response.content
    user.refresh_from_db()
    assert (user.username, user.email) == ("renamed", "Renamed@example.com")


def test_email_change_rechecks_uniqueness_in_any_case(auth_client, user, other_user):
    response = auth_client(user).patch(
        reverse("api:user-me"), {"email": other_user.email.upper()}, format="json"
    )

    assert response.status_code == 400
    assert "email" in response.json()


def test_keeping_own_email_in_other_case_is_allowed(auth_client, user):
    response = auth_client(user).patch(
        reverse("api:user-me"), {"email": user.email.upper()}, format="json"
    )

    assert response.status_code == 200


def test_password_change_needs_the_current_password(auth_client, user):
    client = auth_client(user)
    url = reverse("api:user-me")

    missing = client.patch(url, {"password": STRONG}, format="json")
    wrong = client.patch(
        url, {"password": STRONG, "current_password": "nope-nope-nope"}, format="json"
    )

    assert missing.status_code == wrong.status_code == 400
    assert "current_password" in missing.json()
    assert "current_password" in wrong.json()
    user.refresh_from_db()
    assert user.check_password(TEST_PASSWORD)


def test_password_change_revokes_refresh_tokens(auth_client, tokens_for, user):
    refresh = tokens_for(user)["refresh"]

    response = auth_client(user).patch(
        reverse("api:user-me"),
        {"password": STRONG, "current_password": TEST_PASSWORD},
        format="json",
    )

    assert response.status_code == 200
    assert "password" not in response.json()
    assert _sign_in(user.email, STRONG).status_code == 200
    refreshed = APIClient().post(
        reverse("api:token-refresh"), {"refresh": refresh}, format="json"
    )
    assert refreshed.status_code == 401


def test_patch_ignores_privilege_fields(auth_client, user):
    response = auth_client(user).patch(
        _detail(user), {"is_staff": True, "is_superuser": True}, format="json"
    )

    assert response.status_code == 200
    user.refresh_from_db()
    assert not user.is_staff
    assert not user.is_superuser


def test_put_replaces_email_and_username(auth_client, user):
    client = auth_client(user)
    response = client.put(
        _detail(user), {"email": "put@example.com", "username": "put"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["username"] == "put"
    missing = client.put(_detail(user), {"username": "only"}, format="json")
    assert missing.status_code == 400
    assert "email" in missing.json()


def test_update_permission_matrix(
    api_client, auth_client, user, other_user, staff_user
):
    body = {"username": "changed"}

    assert api_client.patch(_detail(user), body, format="json").status_code == 401
    assert auth_client(other_user).patch(_detail(user), body).status_code == 403
    assert auth_client(staff_user).patch(_detail(user), body).status_code == 200
    user.refresh_from_db()
    assert user.username == "changed"


def test_staff_can_set_another_users_password_without_theirs(
    auth_client, user, staff_user
):
    response = auth_client(staff_user).patch(
        _detail(user), {"password": STRONG}, format="json"
    )

    assert response.status_code == 200
    user.refresh_from_db()
    assert user.check_password(STRONG)


# --- Delete (deactivate) ------------------------------------------------------


def test_delete_permission_matrix(
    api_client, auth_client, user, other_user, staff_user
):
    assert api_client.delete(_detail(user)).status_code == 401
    assert auth_client(other_user).delete(_detail(user)).status_code == 403
    assert auth_client(staff_user).delete(_detail(user)).status_code == 204
    user.refresh_from_db()
    assert not user.is_active


def test_deleting_yourself_deactivates_and_revokes_tokens(tokens_for, user):
    pair = tokens_for(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")

    assert client.delete(_detail(user)).status_code == 204

    assert client.get(reverse("api:user-me")).status_code == 401
    refreshed = APIClient().post(
        reverse("api:token-refresh"), {"refresh": pair["refresh"]}, format="json"
    )
    assert refreshed.status_code == 401
    assert _sign_in(user.email, TEST_PASSWORD).status_code == 401
    assert User.objects.filter(pk=user.pk).exists()


# --- Bulk ---------------------------------------------------------------------


def _bulk(client: APIClient, rows):
    return client.post(reverse("api:user-bulk"), rows, format="json")


def test_bulk_create_by_staff(
    auth_client, staff_user, django_capture_on_commit_callbacks
):
    rows = [
        {"email": "b1@example.com"},
        {"email": "B2@Example.com", "username": "bee-two"},
        {"email": "b3@example.com", "password": STRONG},
    ]

    response = _bulk(auth_client(staff_user), rows)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] == 3
    users = {u.pk: u for u in User.objects.filter(pk__in=body["ids"])}
    created = [users[pk] for pk in body["ids"]]
    assert [u.email for u in created] == [
        "b1@example.com",
        "B2@example.com",
        "b3@example.com",
    ]
    assert [u.username for u in created] == ["b1", "bee-two", "b3"]
    assert not created[0].has_usable_password()
    assert created[2].check_password(STRONG)
    assert _sign_in("b3@example.com", STRONG).status_code == 200


def test_bulk_user_without_password_can_use_password_reset(
    api_client, auth_client, staff_user, django_capture_on_commit_callbacks
):
    _bulk(auth_client(staff_user), [{"email": "nopass@example.com"}])

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            reverse("api:password-reset"), {"email": "nopass@example.com"}
        )

    assert response.status_code == 202
    assert mail.outbox[0].to == ["nopass@example.com"]


def test_bulk_query_count_does_not_grow_with_rows(
    auth_client, staff_user, django_assert_num_queries
):
    client = auth_client(staff_user)
    small = [{"email": f"s{n}@example.com"} for n in range(2)]
    large = [{"email": f"l{n}@example.com"} for n in range(40)]

    # caller, duplicate check, savepoint, INSERT, the cache bump's record, release
    with django_assert_num_queries(6):
        assert _bulk(client, small).status_code == 201
    with django_assert_num_queries(6):
        assert _bulk(client, large).status_code == 201


def test_bulk_derived_usernames_do_not_collide(auth_client, staff_user):
    UserFactory(username="ann")

    response = _bulk(
        auth_client(staff_user),
        [{"email": "ann@a.example"}, {"email": "ann@b.example"}],
    )

    assert response.status_code == 201
    names = set(
        User.objects.filter(pk__in=response.json()["ids"]).values_list(
            "username", flat=True
        )
    )
    assert len(names) == 2
    assert "ann" not in names


def test_bulk_rejects_duplicates_all_or_nothing(auth_client, staff_user, user):
    rows = [
        {"email": "ok@example.com"},
        {"email": "dup@example.com"},
        {"email": "DUP@example.com"},
        {"email": user.email.upper()},
        {"email": "x@example.com", "username": user.username},
        {"email": "bad"},
        "not an object",
    ]

    response = _bulk(auth_client(staff_user), rows)

    assert response.status_code == 400
    errors = {e["index"]: e["errors"] for e in response.json()["errors"]}
    assert set(errors) == {2, 3, 4, 5, 6}
    assert "email" in errors[2]
    assert "email" in errors[3]
    assert "username" in errors[4]
    assert "email" in errors[5]
    assert not User.objects.filter(email="ok@example.com").exists()


@pytest.mark.parametrize("body", [{}, [], {"email": "a@example.com"}, "text"])
def test_bulk_needs_a_non_empty_array(auth_client, staff_user, body):
    assert _bulk(auth_client(staff_user), body).status_code == 400


def test_bulk_over_the_limit_is_400(auth_client, staff_user, settings):
    settings.BULK_MAX_ITEMS = 3
    rows = [{"email": f"m{n}@example.com"} for n in range(4)]

    response = _bulk(auth_client(staff_user), rows)

    assert response.status_code == 400
    assert not User.objects.filter(email__startswith="m").exists()


def test_bulk_permission_matrix(api_client, auth_client, user):
    rows = [{"email": "p@example.com"}]

    assert _bulk(api_client, rows).status_code == 401
    assert _bulk(auth_client(user), rows).status_code == 403
    assert not User.objects.filter(email="p@example.com").exists()
