"""The primary/replica router, with a second local database as the replica."""

import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connections, router, transaction
from django.test import override_settings

from catalog.models import Category
from config.db_router import REPLICA_DB_ALIAS
from tests.factories import TEST_PASSWORD

# Reads inside the test-case transaction would stay on the primary by design,
# so these tests commit for real.
pytestmark = pytest.mark.django_db(
    transaction=True, databases=["default", REPLICA_DB_ALIAS]
)


def _admin_url(url: str) -> str:
    primary = connections["default"].settings_dict
    host = primary["HOST"] or "127.0.0.1"
    return f"postgresql://{primary['USER']}@{host}:{primary['PORT'] or 5432}/{url}"


@pytest.fixture(scope="module")
def replica(django_db_setup, django_db_blocker) -> Iterator[str]:
    """Create a schema copy of the test database and route reads to it."""
    primary = connections["default"].settings_dict
    name = f"{primary['NAME']}_replica"
    with django_db_blocker.unblock():
        with psycopg.connect(_admin_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            admin.execute(f'CREATE DATABASE "{name}"')
        schema = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", _admin_url(primary["NAME"])],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", _admin_url(name)],
            input=schema,
            capture_output=True,
            check=True,
            timeout=60,
        )
        connections.settings[REPLICA_DB_ALIAS] = {**primary, "NAME": name}
        try:
            # Not a standby (the tests write its rows): declared current, as
            # with synchronous_commit = remote_apply, so only the routing
            # rules decide. tests/config/test_replica.py runs a real standby.
            with override_settings(
                DATABASE_ROUTERS=["config.db_router.PrimaryReplicaRouter"],
                DB_REPLICA_REMOTE_APPLY=True,
            ):
                yield name
        finally:
            connections[REPLICA_DB_ALIAS].close()
            del connections[REPLICA_DB_ALIAS]
            del connections.settings[REPLICA_DB_ALIAS]
            with psycopg.connect(_admin_url("postgres"), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture
def fresh_request(replica, client) -> None:
    # A request starts unpinned, as the first request of a worker would.
    client.get("/healthz")


def test_reads_go_to_the_replica_unless_they_must_see_the_primary(
    fresh_request, client
):
    Category.objects.using(REPLICA_DB_ALIAS).create(name="Only there", slug="replica")
    Category.objects.using("default").create(name="Primary", slug="primary")
    client.get("/healthz")
    assert Category.objects.filter(slug="replica").exists()
    assert not Category.objects.filter(slug="primary").exists()
    with transaction.atomic():
        assert Category.objects.filter(slug="primary").exists()

    Category.objects.create(name="Mine", slug="mine")

    assert Category.objects.using("default").filter(slug="mine").exists()
    assert not Category.objects.using(REPLICA_DB_ALIAS).filter(slug="mine").exists()
    # Read your own writes: the rest of this unit of work reads the primary...
    assert Category.objects.filter(slug="mine").exists()
    # ...and the next request starts on the replica again.
    client.get("/healthz")
    assert not Category.objects.filter(slug="mine").exists()


def test_sessions_are_read_from_the_primary(fresh_request, admin_client, admin_user):
    # The account has replicated; the login session written a moment ago has
    # not, and must not be lost to replica lag.
    admin_user.save(using=REPLICA_DB_ALIAS, force_insert=True)

    assert admin_client.get("/admin/").status_code == 200


def test_an_unsafe_request_reads_from_the_primary(fresh_request, client, staff_user):
    # The account is not on the (lagging) replica yet: a login POST must
    # still find it, before its first write pins it to the primary.
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": staff_user.email, "password": TEST_PASSWORD},
    )

    assert response.status_code == 302, response.content
    assert response["Location"] == "/admin/"


def test_migrations_run_on_the_primary_only(replica):
    assert router.allow_migrate("default", "catalog")
    assert not router.allow_migrate(REPLICA_DB_ALIAS, "catalog")
