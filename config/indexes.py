"""Index deferral for bulk loads: drop a model's indexes, load, build them back.

A model's ``Meta.indexes`` serve filters, orderings and search, and the field
indexes Django's migrations add (a foreign key's, and the ``_like`` pattern
index of an indexed or unique text field) serve lookups by those fields; a
bulk load needs none of them (an upsert needs only the primary key and the
unique keys, which stay). Kept up row by row they cost more than the rest of
a load into an empty table, while built once over the loaded table they cost
a fraction of it. A session-level advisory lock per table marks a deliberate
deferral, so that another session never takes the missing indexes for the
leftovers of a crash.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)
class DeferrableIndex:
    """An index a bulk load may drop: its name and how migrations make it."""

    name: str
    gin: bool
    # Each takes an open schema editor.
    create: Callable[[Any], None]
    drop: Callable[[Any], None]


def _meta_index(model: type[models.Model], index: models.Index) -> DeferrableIndex:
    return DeferrableIndex(
        index.name,
        isinstance(index, GinIndex),
        create=lambda editor: editor.add_index(model, index),
        drop=lambda editor: editor.remove_index(model, index),
    )


def _field_index(model: type[models.Model], statement: Any) -> DeferrableIndex:
    name = str(statement.parts["name"]).strip('"')
    return DeferrableIndex(
        name,
        False,
        create=lambda editor: editor.execute(statement),
        drop=lambda editor: editor.execute(editor._delete_index_sql(model, name)),
    )


def deferrable_indexes(model: type[models.Model]) -> list[DeferrableIndex]:
    """Return *model*'s Meta.indexes, then its fields' indexes, as migrations make them.

    The field indexes are the statements Django's schema editor gives a
    field when a migration creates it: a foreign key's index and the
    ``varchar_pattern_ops`` ``_like`` index of an indexed or unique text
    field (same names, same definitions). Unique keys and the primary key
    are constraints, not listed.
    """
    editor = connection.schema_editor()
    deferrable = [_meta_index(model, index) for index in model._meta.indexes]
    for model_field in model._meta.local_concrete_fields:
        deferrable.extend(
            _field_index(model, statement)
            for statement in editor._field_indexes_sql(model, model_field)
        )
    return deferrable


def indexes_missing(model: type[models.Model]) -> list[str]:
    """Return the names of *model*'s deferrable indexes absent from the database."""
    return [index.name for index in _missing(model)]


def _missing(model: type[models.Model]) -> list[DeferrableIndex]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = %s",
            [model._meta.db_table],
        )
        present = {name for (name,) in cursor.fetchall()}
    return [i for i in deferrable_indexes(model) if i.name not in present]


def _build(model: type[models.Model], index: DeferrableIndex) -> None:
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
            index.create(editor)


def _build_in_thread(model: type[models.Model], index: DeferrableIndex) -> None:
    try:
        _build(model, index)
    finally:
        connection.close()


def indexes_restore(model: type[models.Model]) -> list[str]:
    """Create *model*'s missing deferrable indexes as migrations do; return their names.

    Outside a transaction they are built INDEX_BUILD_WORKERS at a time on
    connections of their own, each in its own transaction, so an interruption
    keeps those already built. Writes to the table wait meanwhile.
    """
    missing = _missing(model)
    meta = {index.name for index in model._meta.indexes}
    # A GIN build takes several times as long as a btree one: starting them
    # first lets the workers finish close together. Then the Meta.indexes
    # (last first), then the field indexes.
    todo = sorted(
        [
            *reversed([index for index in missing if index.name in meta]),
            *[index for index in missing if index.name not in meta],
        ],
        key=lambda index: not index.gin,
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
    """Drop *model*'s deferrable indexes; return their names.

    Call it under index_lock() and build them back with indexes_restore();
    until then lists and searches scan the table. The primary key and unique
    keys stay. Drops nothing (and returns []) when the table stays in use for
    DROP_LOCK_WAIT: rather than stall readers behind a long transaction.
    """
    missing = set(indexes_missing(model))
    dropped = [i for i in deferrable_indexes(model) if i.name not in missing]
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [DROP_LOCK_WAIT]
            )
            with connection.schema_editor(atomic=False) as editor:
                for index in dropped:
                    index.drop(editor)
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
    """Run a bulk load of *model* with its deferrable indexes dropped, then build them.

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
                deferral.busy = not deferral.dropped and bool(deferrable_indexes(model))
        try:
            yield deferral
        finally:
            deferral.finish()
