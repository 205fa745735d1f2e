"""Read from the PostgreSQL replica, write to the primary, and read your own writes.

Active when DATABASE_REPLICA_URL is set (settings then add the "replica"
alias and this router). Reads go to the primary instead when they must see
fresh data: inside a transaction, for the rest of a request (or a task) after
its first write, for the whole of an unsafe-method request, and always for
state that a lagging copy would make wrong (sessions, the token blacklist,
the task queue). Otherwise the replica serves them only while it is alive and
has replayed the last recorded write (``config.replica``): checked once at a
request's first read, and again for every block that fills a shared cache
(``fresh_reads()``), so a stopped or lagging replica sends reads to the
primary within the same request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model

from config.replica import REPLICA_DB_ALIAS, read_alias

__all__ = ["REPLICA_DB_ALIAS", "PrimaryReplicaRouter", "fresh_reads"]

# A stale session logs people out, a stale blacklist accepts a revoked token,
# and a stale queue runs a task twice.
PRIMARY_ONLY_APPS = frozenset({"sessions", "token_blacklist", "django_tasks_db"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# A request's choice is kept this long; outside requests (commands, tasks)
# it is made again after it, so a long job follows the replica's state.
_DECISION_SECONDS = 1.0

_pinned_to_primary: ContextVar[bool] = ContextVar("pinned_to_primary", default=False)
# (alias, when chosen) for the reads of this request or block; None: not chosen yet.
_read_choice: ContextVar[tuple[str, float] | None] = ContextVar(
    "read_choice", default=None
)


def begin_request(method: str) -> None:
    """Start a request: unsafe methods read from the primary throughout."""
    _pinned_to_primary.set(method.upper() not in SAFE_METHODS)
    _read_choice.set(None)


@contextmanager
def fresh_reads() -> Iterator[None]:
    """Read inside the block from a copy that has every write recorded so far.

    Wrap a computation whose result is shared (a cache fill, a memo load) and
    enter it after reading the namespace versions it is stored under: the
    replica serves it only if it has replayed every write whose bump could
    be in those versions; else (or when it is down) the primary does.
    """
    pinned = _pinned_to_primary.get() or REPLICA_DB_ALIAS not in connections.settings
    choice = None if pinned else (read_alias(), float("inf"))
    token = _read_choice.set(choice)
    try:
        yield
    finally:
        _read_choice.reset(token)


class PrimaryReplicaRouter:
    """Route reads to the replica unless they must see the primary's latest data."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        """Return the alias that serves this read."""
        if (
            _pinned_to_primary.get()
            or model._meta.app_label in PRIMARY_ONLY_APPS
            or REPLICA_DB_ALIAS not in connections.settings
            or connections[DEFAULT_DB_ALIAS].in_atomic_block
        ):
            return DEFAULT_DB_ALIAS
        choice = _read_choice.get()
        now = time.monotonic()
        if choice is None or now - choice[1] > _DECISION_SECONDS:
            choice = (read_alias(), now)
            _read_choice.set(choice)
        return choice[0]

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        """Send every write to the primary and pin later reads to it."""
        _pinned_to_primary.set(True)
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        """Allow relations: both aliases hold the same data."""
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        """Migrate the primary only; the replica copies it."""
        return db == DEFAULT_DB_ALIAS
