"""The PostgreSQL backend's health check: a dead connection found without a query.

Served, a restarted PostgreSQL is reconnected to on the next request:
tests/config/test_db_failure.py, which stops and starts a real cluster.
"""

import time

import pytest
from django.db import connection

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
