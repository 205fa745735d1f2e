"""PostgreSQL as django-prometheus instruments it, health-checked without a round trip.

Django checks a persistent connection (``CONN_HEALTH_CHECKS``) before the
first query of every request by running ``SELECT 1``: one more round trip to
PostgreSQL for every request that reads or writes. An idle connection gets
nothing from the server until it sends a query, so whatever can be read from
its socket then is the server ending it (a restart, ``pg_terminate_backend``,
an idle-session timeout, PgBouncer going away): a FATAL message or the end of
the stream. Polling the socket without waiting tells a dead connection from a
live one at the cost of a system call; a connection so detected is replaced
before the request's first query, as Django's check would.
"""

from __future__ import annotations

import select

from django_prometheus.db.backends.postgresql import base
from psycopg.pq import TransactionStatus

# Where the server waits for the next query: SELECT 1 would be answered.
_ANSWERING = (TransactionStatus.IDLE, TransactionStatus.INTRANS)


class DatabaseWrapper(base.DatabaseWrapper):
    """django-prometheus' PostgreSQL wrapper with a socket-level ``is_usable``."""

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
