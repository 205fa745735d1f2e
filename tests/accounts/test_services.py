import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from rest_framework_simplejwt.exceptions import AuthenticationFailed, TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from accounts.services import (
    BULK_MAX_PASSWORDS,
    tokens_rotate,
    user_deactivate,
    user_register,
    user_tokens_revoke,
    user_update,
    users_bulk_create,
    users_ids_by_email,
    users_set_active,
)
from accounts.validation import clean_user, username_from_email
from config.validation import ItemErrors
from tests.factories import UserFactory

STRONG = "plum-kettle-orbit-93"


# --- clean_user (pure: no database) ------------------------------------------------


def test_clean_user_normalises_email_and_derives_username():
    cleaned, errors = clean_user({"email": "  Jane.Doe@EXAMPLE.Com "})

    assert errors == {}
    assert cleaned == {"email": "Jane.Doe@example.com", "username": "Jane.Doe"}


def test_clean_user_ignores_unknown_and_privilege_keys():
    cleaned, errors = clean_user(
        {"email": "a@example.com", "is_staff": True, "id": 3, "groups": [1]}
    )

    assert errors == {}
    assert set(cleaned) == {"email", "username"}


def test_clean_user_requires_email_on_create_only():
    assert "email" in clean_user({})[1]
    assert clean_user({}, partial=True) == ({}, {})
    assert "email" in clean_user({"email": None}, partial=True)[1]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"email": 12}, "email"),
        ({"email": f"{'a' * 250}@example.com"}, "email"),
        ({"email": "a@example.com", "username": "a b"}, "username"),
        ({"email": "a@example.com", "username": "x" * 151}, "username"),
        ({"email": "a@example.com", "username": 5}, "username"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"email": "a@example.com", "password": "123456789"}, "password"),
        ({"email": "a@example.com", "password": "pass\x00word-long-1"}, "password"),
        ({"email": "a@example.com", "password": ["list"]}, "password"),
    ],
)
def test_clean_user_reports_field_errors(data, field):
    cleaned, errors = clean_user(data)

    assert field in errors
    assert field not in cleaned


def test_clean_user_rejects_password_similar_to_email_or_current_username():
    _, on_create = clean_user(
        {"email": "qwertyuiop@example.com", "password": "qwertyuiop1"}
    )
    _, on_update = clean_user(
        {"password": "gandalfthegrey"},
        partial=True,
        current={"username": "gandalfthegrey"},
    )

    assert "password" in on_create
    assert "password" in on_update


def test_clean_user_treats_empty_password_as_absent():
    cleaned, errors = clean_user({"email": "a@example.com", "password": ""})

    assert errors == {}
    assert "password" not in cleaned


def test_clean_user_runs_without_the_database():
    # No django_db mark: any query here would raise.
    for n in range(50):
        assert clean_user({"email": f"u{n}@example.com", "password": STRONG})[1] == {}


@pytest.mark.parametrize(
    ("email", "username"),
    [
        ("john.smith@example.com", "john.smith"),
        ("we!rd#chars@example.com", "werdchars"),
        ("!!!@example.com", "user"),
        (f"{'x' * 200}@example.com", "x" * 150),
    ],
)
def test_username_from_email_is_always_valid(email, username):
    assert username_from_email(email) == username
    assert clean_user({"email": "a@example.com", "username": username})[1] == {}


# --- Writes ------------------------------------------------------------------------


@pytest.mark.django_db
def test_user_register_hashes_the_password_and_rejects_duplicates():
    user = user_register(email="reg@example.com", password=STRONG)

    assert user.password != STRONG
    assert user.check_password(STRONG)
    with pytest.raises(ValidationError) as excinfo:
        user_register(email="REG@example.com", password=STRONG)
    assert "email" in excinfo.value.message_dict


@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_of_one_email_in_two_cases_let_one_win():
    barrier = threading.Barrier(2)
    results: list[str] = []

    def register(email: str) -> None:
        barrier.wait()
        try:
            user_register(email=email, password=STRONG)
            results.append("created")
        except ValidationError as exc:
            results.append(",".join(exc.message_dict))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=register, args=(email,))
        for email in ("race@example.com", "RACE@example.com")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["created", "email"]
    assert User.objects.filter(email__iexact="race@example.com").count() == 1


@pytest.mark.django_db
def test_user_update_rejects_a_taken_username():
    first = UserFactory()
    second = UserFactory()
    with pytest.raises(ValidationError) as excinfo:
        user_update(user=second, username=first.username)
    assert "username" in excinfo.value.message_dict


@pytest.mark.django_db
def test_tokens_rotate_lets_a_refresh_token_work_once():
    user = UserFactory()
    refresh = str(RefreshToken.for_user(user))

    pair = tokens_rotate(refresh=refresh)

    assert set(pair) == {"access", "refresh"}
    with pytest.raises(TokenError):
        tokens_rotate(refresh=refresh)


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_of_one_token_let_exactly_one_win():
    user = UserFactory()
    refresh = str(RefreshToken.for_user(user))
    barrier = threading.Barrier(2)
    results: list[str] = []

    def rotate() -> None:
        barrier.wait()
        try:
            tokens_rotate(refresh=refresh)
            results.append("rotated")
        except TokenError:
            results.append("rejected")
        finally:
            connection.close()

    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["rejected", "rotated"]


@pytest.mark.django_db
def test_tokens_rotate_refuses_inactive_users():
    user = UserFactory(is_active=False)

    with pytest.raises(AuthenticationFailed):
        tokens_rotate(refresh=str(RefreshToken.for_user(user)))


@pytest.mark.django_db
def test_users_set_active_and_user_deactivate_revoke_refresh_tokens():
    user, other = UserFactory(), UserFactory()
    refresh = str(RefreshToken.for_user(user))
    other_refresh = str(RefreshToken.for_user(other))

    assert users_set_active(users=User.objects.filter(pk=user.pk), active=False) == 1
    with pytest.raises(TokenError):
        RefreshToken(refresh)
    user_deactivate(user=other)
    with pytest.raises(TokenError):
        RefreshToken(other_refresh)
    assert users_set_active(users=User.objects.all(), active=True) == 2
    assert user_tokens_revoke(user_ids=[user.pk]) == 0


@pytest.mark.django_db
def test_users_bulk_create_is_all_or_nothing():
    UserFactory(email="taken@example.com", username="taken")

    with pytest.raises(ItemErrors) as excinfo:
        users_bulk_create(
            rows=[
                {"email": "fine@example.com"},
                {"email": "Taken@Example.com"},
                {"email": "z@example.com", "username": "taken"},
            ]
        )

    assert [e["index"] for e in excinfo.value.errors] == [1, 2]
    assert not User.objects.filter(email="fine@example.com").exists()


@pytest.mark.django_db
def test_users_bulk_create_limits_rows_with_passwords(settings):
    rows = [
        {"email": f"p{n}@example.com", "password": STRONG}
        for n in range(BULK_MAX_PASSWORDS + 1)
    ]

    with pytest.raises(ValidationError) as excinfo:
        users_bulk_create(rows=rows)

    assert "password" in excinfo.value.message_dict
    assert not User.objects.exists()


@pytest.mark.django_db
def test_users_ids_by_email_matches_any_case_and_skips_what_cannot_be_an_address():
    alice = UserFactory(email="alice@example.com")
    bob = UserFactory(email="Bob@Example.com")

    found = users_ids_by_email(
        emails=["ALICE@example.com", "bob@example.com", "nobody@example.com",
                "alice@example.com\nbob@example.com"]
    )  # fmt: skip

    assert found == {"alice@example.com": alice.pk, "bob@example.com": bob.pk}
    assert users_ids_by_email(emails=["a\nb"]) == {}
    assert users_ids_by_email(emails=[]) == {}
