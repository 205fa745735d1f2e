"""PostgreSQL as django-prometheus instruments it: health-checked without a round
trip, with prepared statements for the hottest reads.

Django checks a persistent connection (``CONN_HEALTH_CHECKS``) before the
first query of every request by running ``SELECT 1``: one more round trip to
PostgreSQL for every request that reads or writes. An idle connection gets
nothing from the server until it sends a query, so whatever can be read from
its socket then is the server ending it (a restart, ``pg_terminate_backend``,
an idle-session timeout, PgBouncer going away): a FATAL message or the end of
the stream. Polling the socket without waiting tells a dead connection from a
live one at the cost of a system call; a connection so detected is replaced
before the request's first query, as Django's check would.

Django sends every query with its parameters merged in (client-side binding),
so PostgreSQL parses and plans each one anew: for a product's row, joined to
its category and owner, planning cost 0.5 ms of the server's CPU and running
it 0.1 ms. ``prepared_cursor()`` hands out a cursor that binds on the server
and prepares each statement once per connection; the SQL compiled once by
``config.compiled`` (and the dashboard's, ``catalog.analytics``) goes through
it. With ``prepare_threshold`` None
(``DB_PREPARED_STATEMENTS`` off, for a pooler that cannot keep prepared
statements) psycopg sends the same statements unprepared.
"""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.postgresql import operations
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper
from django.utils.functional import cached_property
from django_prometheus.db.backends.postgresql import base
from django_prometheus.db.common import ExportingCursorWrapper
from psycopg.errors import DataError
from psycopg.pq import TransactionStatus

# Where the server waits for the next query: SELECT 1 would be answered.
_ANSWERING = (TransactionStatus.IDLE, TransactionStatus.INTRANS)


class PreparingCursor(ServerBindingCursor):
    """A server-side binding cursor that prepares every statement it runs."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("prepare", True)
        return super().execute(query, params, **kwargs)


class DatabaseOperations(operations.DatabaseOperations):
    """Django's, logging a prepared statement's SQL with its parameters."""

    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str | None:
        if isinstance(cursor, PreparingCursor):
            # psycopg keeps no query text for a prepared statement it runs:
            # the SQL Django logs (DEBUG, the tests' query counts) is composed
            # as for a server-side binding connection.
            try:
                return self.compose_sql(sql, params)
            except DataError:
                return None
        return super().last_executed_query(cursor, sql, params)


class DatabaseWrapper(base.DatabaseWrapper):
    """django-prometheus' wrapper: socket-level ``is_usable``, prepared reads."""

    ops_class = DatabaseOperations

    def prepared_cursor(self) -> CursorWrapper:
        """Return a cursor whose statements PostgreSQL prepares once per connection.

        Parameters are bound on the server, so the statement is one per SQL
        and parameter types: only for SQL written or compiled once (through
        ``config.compiled.prepared_cursor()``), never for SQL built per
        request. Queries are logged and counted as
        through ``cursor()``.
        """
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            return self._prepare_cursor(self._preparing_cursor(self.connection))

    @cached_property
    def _preparing_cursor(self) -> type[PreparingCursor]:
        # Counted in django-prometheus' query metrics like Django's cursors.
        return ExportingCursorWrapper(PreparingCursor, self.alias, self.vendor)

    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.info.transaction_status not in _ANSWERING:
            # A failed transaction refuses queries (Django's SELECT 1 would
            # fail too); an unknown state is a lost connection.
            return False
        # poll(), not select(): select() refuses descriptors above 1023, which
        # a busy process reaches, and would then reconnect on every request.
        poller = select.poll()
        try:
            poller.register(connection.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False
