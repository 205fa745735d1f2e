from collections.abc import Callable

import pytest
from django.core.cache import cache
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from tests.factories import TEST_PASSWORD, UserFactory


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Start every test with an empty cache (keys are prefixed per test process)."""
    cache.clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db) -> User:
    return UserFactory()


@pytest.fixture
def other_user(db) -> User:
    return UserFactory()


@pytest.fixture
def staff_user(db) -> User:
    return UserFactory(staff=True)


@pytest.fixture
def admin_user(db) -> User:
    """Override pytest-django's admin_user so admin_client logs in our email user."""
    return UserFactory(superuser=True)


@pytest.fixture
def tokens_for() -> Callable[[User], dict]:
    """Sign *user* in through POST /auth/token/ and return {access, refresh}."""

    def _tokens_for(user: User) -> dict:
        response = APIClient().post(
            reverse("api:token-obtain"),
            {"email": user.email, "password": TEST_PASSWORD},
            format="json",
        )
        assert response.status_code == 200, response.content
        return response.json()

    return _tokens_for


@pytest.fixture
def auth_client(tokens_for) -> Callable[[User], APIClient]:
    """Return an APIClient carrying a real bearer token for *user*."""

    def _auth_client(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for(user)['access']}")
        return client

    return _auth_client


@pytest.fixture
def dsn(django_db_setup) -> str:
    """Return the libpq DSN of the test database, for a session of its own."""
    settings = connection.settings_dict
    return (
        f"host={settings['HOST']} port={settings['PORT'] or 5432}"
        f" dbname={settings['NAME']} user={settings['USER']}"
        f" password={settings['PASSWORD'] or ''}"
    )


@pytest.fixture(scope="session")
def postgres_pair():
    """A private PostgreSQL primary and its streaming standby (pg_basebackup -R)."""
    from bench.cluster import PostgresPair

    pair = PostgresPair()
    try:
        yield pair.start()
    finally:
        pair.stop()
