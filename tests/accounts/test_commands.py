from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import User
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_createsuperuser_noinput_reads_django_superuser_variables(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "Root@Example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-unusual-passphrase")
    call_command("createsuperuser", "--noinput", stdout=StringIO())
    user = User.objects.get(username="root")
    assert user.is_staff and user.is_superuser
    assert user.check_password("a-long-unusual-passphrase")


def test_ensure_admin_creates_then_reuses_the_login():
    out = StringIO()
    call_command(
        "ensure_admin", email="ops@example.com", password="first-pass-1", stdout=out
    )
    call_command(
        "ensure_admin", email="OPS@example.com", password="second-pass-2", stdout=out
    )
    assert "Created admin login" in out.getvalue()
    assert "Reused admin login" in out.getvalue()
    user = User.objects.get()
    assert user.is_staff and user.is_superuser and user.is_active
    assert user.check_password("second-pass-2")


def test_ensure_admin_reactivates_and_promotes_an_existing_user():
    UserFactory(email="ops@example.com", is_active=False)
    call_command(
        "ensure_admin",
        email="ops@example.com",
        password="pass-word-3",
        stdout=StringIO(),
    )
    user = User.objects.get()
    assert user.is_active and user.is_staff and user.is_superuser


def test_ensure_admin_refuses_a_short_password():
    with pytest.raises(CommandError, match="at least 8"):
        call_command(
            "ensure_admin", email="ops@example.com", password="short", stdout=StringIO()
        )
    assert not User.objects.exists()
