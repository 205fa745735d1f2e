"""Read from the PostgreSQL replica, write to the primary, and read your own writes.

Active when DATABASE_REPLICA_URL is set (settings then add the "replica"
alias and this router). Reads go to the primary instead when they must see
fresh data: inside a transaction, for the rest of a request (or a task) after
its first write, for the whole of an unsafe-method request, and always for
state that a lagging copy would make wrong (sessions, the token blacklist,
the task queue).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model

REPLICA_DB_ALIAS = "replica"
# A stale session logs people out, a stale blacklist accepts a revoked token,
# and a stale queue runs a task twice.
PRIMARY_ONLY_APPS = frozenset({"sessions", "token_blacklist", "django_tasks_db"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_pinned_to_primary: ContextVar[bool] = ContextVar("pinned_to_primary", default=False)


def begin_request(method: str) -> None:
    """Start a request: unsafe methods read from the primary throughout."""
    _pinned_to_primary.set(method.upper() not in SAFE_METHODS)


@contextmanager
def primary_reads() -> Iterator[None]:
    """Read from the primary inside the block (e.g. to fill a shared cache)."""
    token = _pinned_to_primary.set(True)
    try:
        yield
    finally:
        _pinned_to_primary.reset(token)


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
        return REPLICA_DB_ALIAS

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
