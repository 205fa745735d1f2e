import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from config.admin_display import CHANGELIST_CSS
from tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def test_changelist_search_and_filters(admin_client):
    UserFactory(email="grace@example.com", username="grace")
    UserFactory(email="alan@example.com", username="alan", is_active=False)
    url = reverse("admin:accounts_user_changelist")
    assert admin_client.get(url).status_code == 200
    response = admin_client.get(url, {"q": "grace"})
    assert b"grace@example.com" in response.content
    assert b"alan@example.com" not in response.content
    response = admin_client.get(url, {"is_active__exact": "0"})
    assert b"alan@example.com" in response.content
    assert b"grace@example.com" not in response.content
    for params in (
        {"is_staff__exact": "1"},
        {"created_at__gte": "2020-01-01 00:00:00+00:00"},
    ):
        assert admin_client.get(url, params).status_code == 200


def test_add_user_with_password_forms(admin_client):
    response = admin_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "new@example.com",
            "username": "newbie",
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
            "usable_password": "true",
        },
    )
    assert response.status_code == 302, response.content
    user = User.objects.get(username="newbie")
    assert user.check_password("a-long-unusual-passphrase")


def test_change_form_and_password_change_form(admin_client):
    user = UserFactory()
    assert (
        admin_client.get(
            reverse("admin:accounts_user_change", args=[user.pk])
        ).status_code
        == 200
    )
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {
            "password1": "another-long-passphrase",
            "password2": "another-long-passphrase",
        },
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("another-long-passphrase")


def test_password_change_in_admin_revokes_refresh_tokens(admin_client, tokens_for):
    user = UserFactory()
    refresh = tokens_for(user)["refresh"]
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {
            "password1": "another-long-passphrase",
            "password2": "another-long-passphrase",
        },
    )
    assert response.status_code == 302
    response = APIClient().post(
        reverse("api:token-refresh"), {"refresh": refresh}, format="json"
    )
    assert response.status_code == 401


def test_deactivate_and_activate_actions(admin_client):
    users = UserFactory.create_batch(2)
    url = reverse("admin:accounts_user_changelist")
    ids = [u.pk for u in users]
    admin_client.post(url, {"action": "deactivate_users", "_selected_action": ids})
    assert not User.objects.filter(pk__in=ids, is_active=True).exists()
    admin_client.post(url, {"action": "activate_users", "_selected_action": ids})
    assert User.objects.filter(pk__in=ids, is_active=True).count() == 2


def test_non_staff_login_is_refused(client):
    user = UserFactory()
    response = client.post(
        reverse("admin:login"), {"username": user.email, "password": TEST_PASSWORD}
    )
    assert response.status_code == 200
    assert b"staff account" in response.content
    response = client.get(reverse("admin:accounts_user_changelist"))
    assert response.status_code == 302


def test_staff_login_with_email_in_other_case_works(client):
    staff = UserFactory(staff=True, email="Ops@Example.com")
    response = client.post(
        reverse("admin:login"),
        {"username": "ops@example.com", "password": TEST_PASSWORD},
    )
    assert response.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200
    assert staff.is_staff


def test_changelist_is_compact_and_linked_to_its_stylesheet(admin_client):
    UserFactory(email=f"{'x' * 45}@example.com", username="grace")

    response = admin_client.get(reverse("admin:accounts_user_changelist"))

    html = response.content.decode()
    assert f'<span title="{"x" * 45}@example.com">{"x" * 39}…</span>' in html
    assert 'class="field-created"' in html
    assert f'href="/static/{CHANGELIST_CSS}"' in html
    assert 'id="nav-sidebar"' not in html
