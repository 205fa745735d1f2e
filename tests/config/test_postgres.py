"""The PostgreSQL backend: a dead connection found without a query, prepared reads.

Served, a restarted PostgreSQL is reconnected to on the next request:
tests/config/test_db_failure.py, which stops and starts a real cluster.
"""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import User
from catalog.models import Product
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _own_connection():
    """Return a connection of the default database apart from the test's own."""
    other = connection.copy()
    other.ensure_connection()
    return other


def _last_query(pid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def test_a_live_connection_is_usable_without_a_round_trip():
    other = _own_connection()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        assert other.is_usable()
        # The server saw no SELECT 1 (Django's check) after the last query.
        assert _last_query(pid) == "SELECT pg_backend_pid()"
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT 1 / 1")
        assert other.is_usable()  # inside a transaction too
        with (
            other.cursor() as cursor,
            pytest.raises(Exception, match="division by zero"),
        ):
            cursor.execute("SELECT 1 / 0")
        assert not other.is_usable()  # a failed transaction answers nothing
    finally:
        other.close()


def test_a_terminated_connection_is_replaced_before_the_next_query():
    other = _own_connection()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (pid,) = cursor.fetchone()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 5
        while other.is_usable():
            assert time.monotonic() < deadline, "the termination was never seen"
            time.sleep(0.01)
        # What Django does at a request's first query when the check fails.
        other.health_check_enabled, other.health_check_done = True, False
        other.close_if_health_check_failed()
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != pid
    finally:
        other.close()


def _prepared_statements(conn=connection) -> list[tuple[str, list[str], int]]:
    """Return (SQL, parameter types, executions) of *conn*'s prepared statements."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT statement, parameter_types::text[], generic_plans + custom_plans"
            " FROM pg_prepared_statements ORDER BY prepare_time"
        )
        return cursor.fetchall()


def test_compiled_reads_are_prepared_once_per_connection(auth_client, user):
    products = ProductFactory.create_batch(3, owner=user)
    client = auth_client(user)
    connection.close()  # a connection of its own: no statement prepared yet
    with CaptureQueriesContext(connection) as queries:
        for product in products:  # reads by id, small and large keys alike
            url = reverse("api:product-detail", args=[product.pk])
            assert client.get(url).json()["id"] == product.pk
            assert client.patch(url, {"stock": 9}, format="json").status_code == 200
    rows = [s for s in _prepared_statements() if 'FROM "catalog_product"' in s[0]]
    # One statement for the detail's row and one for the row a write locks,
    # each run three times with one parameter type; the logged SQL names the
    # key as a plain query's would.
    assert [(types, runs) for _, types, runs in rows] == [
        (["bigint"], 3),
        (["bigint"], 3),
    ]
    assert "FOR UPDATE" in rows[1][0]
    logged = [q["sql"] for q in queries.captured_queries]
    assert any(f'"id" = {products[0].pk} ' in sql for sql in logged)
    # The caller: loaded by each write, and by the first read (then memoized).
    users = [s for s in _prepared_statements() if 'FROM "accounts_user"' in s[0]]
    assert [(types, runs) for _, types, runs in users] == [(["bigint"], 4)]


def test_a_page_of_rows_is_one_statement_whatever_the_sizes_of_its_keys(user):
    first = ProductFactory(owner=user)
    pks = [first.pk, first.pk + 100_000, first.pk + 5_000_000_000]
    assert [row[0] for row in Product.objects.api_rows(pks)] == [first.pk]
    assert [row[0] for row in Product.objects.api_rows(pks[::-1])] == [first.pk]
    rows = [s for s in _prepared_statements() if 'FROM "catalog_product"' in s[0]]
    assert [(types, runs) for _, types, runs in rows] == [(["bigint"] * 3, 2)]


def test_without_prepared_statements_the_same_reads_prepare_nothing(user):
    other = connection.copy()
    other.settings_dict["OPTIONS"] = {
        **other.settings_dict["OPTIONS"],
        "prepare_threshold": None,  # DB_PREPARED_STATEMENTS=False
    }
    try:
        for _ in range(6):
            with other.prepared_cursor() as cursor:
                cursor.execute(
                    "SELECT username FROM accounts_user WHERE id = %s", [user.pk]
                )
                assert cursor.fetchone() == (user.username,)
        assert _prepared_statements(other) == []
    finally:
        other.close()


def test_prepared_reads_go_on_after_the_connection_is_replaced(user):
    read = User.objects.filter(pk=user.pk).values_list("username", flat=True)
    assert _active_username(user.pk) == user.username
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = _own_connection()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    deadline = time.monotonic() + 5
    while connection.is_usable():
        assert time.monotonic() < deadline, "the termination was never seen"
        time.sleep(0.01)
    connection.health_check_enabled, connection.health_check_done = True, False
    # The new connection prepares the statement again; nothing is asked of
    # a statement the old server session held.
    assert _active_username(user.pk) == user.username
    assert list(read) == [user.username]


def _active_username(pk: int) -> str:
    from accounts.api.authentication import _active_user

    return _active_user(pk).username
