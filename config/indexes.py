"""Index deferral for bulk loads: drop a model's Meta.indexes, load, build them back.

A model's ``Meta.indexes`` serve filters, orderings and search; a bulk load
does not need them (an upsert needs only the primary key and the unique
keys, which stay). Kept up row by row they cost more than the rest of a load
into an empty table, while built once over the loaded table they cost a
fraction of it. A session-level advisory lock per table marks a deliberate
deferral, so that another session never takes the missing indexes for the
leftovers of a crash.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from django.contrib.postgres.indexes import GinIndex
from django.db import DatabaseError, OperationalError, connection, models, transaction

# Long enough for the backend of a killed load to notice and release it.
INDEX_LOCK_WAIT = "10s"
# A queued DROP INDEX blocks every later reader of the table.
DROP_LOCK_WAIT = "2s"
# Per build: sorts and GIN accumulates in memory when they fit (the server
# default is 64MB, which makes the full-text build spill).
INDEX_BUILD_MEMORY = "512MB"
INDEX_BUILD_WORKERS = 2
LOCK_NOT_AVAILABLE = "55P03"


def index_lock_key(model: type[models.Model]) -> int:
    """Return the advisory lock key that covers index work on *model*'s table."""
    return zlib.crc32(f"indexes:{model._meta.db_table}".encode())


def _lock_not_available(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE


def check_constraints_now() -> None:
    """Check deferred constraints per statement for the rest of the transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


@contextmanager
def index_lock(model: type[models.Model]) -> Iterator[bool]:
    """Hold the lock that covers deliberate index work on *model*'s table.

    Yield whether it was obtained within INDEX_LOCK_WAIT; False means that
    another session is loading the table with its indexes dropped.
    """
    key = index_lock_key(model)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [INDEX_LOCK_WAIT]
            )
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
        held = True
    except OperationalError as exc:
        if not _lock_not_available(exc):
            raise
        held = False
    try:
        yield held
    finally:
        if held:
            # A lost connection has released the lock already.
            with suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def indexes_missing(model: type[models.Model]) -> list[str]:
    """Return the names of *model*'s Meta.indexes absent from the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = %s",
            [model._meta.db_table],
        )
        present = {name for (name,) in cursor.fetchall()}
    return [i.name for i in model._meta.indexes if i.name not in present]


def _build(model: type[models.Model], index: models.Index) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        # CREATE INDEX refuses a table with deferred foreign-key checks
        # pending in the enclosing transaction (a caller's or a test's).
        check_constraints_now()
        # For this transaction only: a bulk build outlasts the statement
        # timeout of ordinary queries and is faster with more memory.
        cursor.execute(
            "SELECT set_config('statement_timeout', '0', true),"
            " set_config('maintenance_work_mem', %s, true)",
            [INDEX_BUILD_MEMORY],
        )
        with connection.schema_editor(atomic=False) as editor:
            editor.add_index(model, index)


def _build_in_thread(model: type[models.Model], index: models.Index) -> None:
    try:
        _build(model, index)
    finally:
        connection.close()


def indexes_restore(model: type[models.Model]) -> list[str]:
    """Create *model*'s missing Meta.indexes as migrations do; return their names.

    Outside a transaction they are built INDEX_BUILD_WORKERS at a time on
    connections of their own, each in its own transaction, so an interruption
    keeps those already built. Writes to the table wait meanwhile.
    """
    missing = set(indexes_missing(model))
    # A GIN build takes several times as long as a btree one: starting them
    # first lets the workers finish close together.
    todo = sorted(
        (index for index in reversed(model._meta.indexes) if index.name in missing),
        key=lambda index: not isinstance(index, GinIndex),
    )
    if len(todo) < 2 or connection.in_atomic_block:
        # Other connections could neither see this transaction's rows nor get
        # past its locks.
        for index in todo:
            _build(model, index)
    else:
        with ThreadPoolExecutor(
            max_workers=INDEX_BUILD_WORKERS, thread_name_prefix="index-build"
        ) as pool:
            futures = [pool.submit(_build_in_thread, model, i) for i in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return [index.name for index in todo]


def indexes_drop(model: type[models.Model]) -> list[str]:
    """Drop *model*'s Meta.indexes; return their names.

    Call it under index_lock() and build them back with indexes_restore();
    until then lists and searches scan the table. The primary key and unique
    keys stay. Drops nothing (and returns []) when the table stays in use for
    DROP_LOCK_WAIT: rather than stall readers behind a long transaction.
    """
    missing = set(indexes_missing(model))
    dropped = [index for index in model._meta.indexes if index.name not in missing]
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [DROP_LOCK_WAIT]
            )
            with connection.schema_editor(atomic=False) as editor:
                for index in dropped:
                    editor.remove_index(model, index)
    except OperationalError as exc:
        if not _lock_not_available(exc):
            raise
        return []
    return [index.name for index in dropped]


@dataclass
class Deferral:
    """What deferred_indexes() did: the lock, leftovers built, indexes dropped."""

    model: type[models.Model]
    held: bool = False
    restored: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    # Deferral was wanted but the table stayed in use: loaded with indexes.
    busy: bool = False

    def finish(self) -> list[str]:
        """Build the indexes dropped for this load (once); return their names."""
        names, self.dropped = self.dropped, []
        if names:
            indexes_restore(self.model)
        return names


@contextmanager
def deferred_indexes(
    model: type[models.Model], *, defer: bool | None
) -> Iterator[Deferral]:
    """Run a bulk load of *model* with its Meta.indexes dropped, then build them.

    Under index_lock(): first builds the indexes an interrupted load left
    missing, then drops them all when *defer* is True, or None and the table
    is empty. Yields a Deferral; its finish() (also run on leaving, whatever
    happened) builds them back. Without the lock nothing is touched.
    """
    with index_lock(model) as held:
        deferral = Deferral(model, held=held)
        if held:
            # A load killed after dropping indexes leaves them missing.
            deferral.restored = indexes_restore(model)
            if defer is None:
                defer = not model._default_manager.exists()
            if defer:
                deferral.dropped = indexes_drop(model)
                deferral.busy = not deferral.dropped and bool(model._meta.indexes)
        try:
            yield deferral
        finally:
            deferral.finish()
