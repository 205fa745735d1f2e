"""Reads of one row by primary key whose SQL Django compiles once.

On the hottest paths (a product's detail, the row a write locks, the user of a
signed-in write) building and compiling the QuerySet cost more CPU than
PostgreSQL spent running the primary-key probe: 0.7 ms against 0.2 ms for a
user. A ``CompiledRead`` compiles its QuerySet once per database alias, with a
placeholder where the key goes, then only sends the SQL with the key, as a
statement PostgreSQL prepares once per connection (``prepared_cursor()`` of
``config.postgres``): planning the join of a product's row cost the server
five times what running it did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections, models
from django.db.backends.utils import CursorWrapper
from psycopg.types.numeric import Int8

# A key no row has: marks where the key goes among the compiled parameters.
KEY_PLACEHOLDER = -7_319_017_541

Build = Callable[[models.QuerySet[Any]], models.QuerySet[Any]]


def stored_attnames(model: type[models.Model]) -> tuple[str, ...]:
    """Return the attribute names of *model*'s stored columns (no generated ones)."""
    return tuple(
        field.attname
        for field in model._meta.concrete_fields
        if not isinstance(field, models.GeneratedField)
    )


def _key(pk: Any) -> Any:
    # One parameter type whatever the value (psycopg would send 7 as int2 and
    # 70,000 as int4): one prepared statement per SQL, not one per mix of
    # key sizes in a page.
    if type(pk) is int and -(2**63) <= pk < 2**63:
        return Int8(pk)
    return pk


def _with_key(params: tuple[Any, ...], pk: Any) -> list[Any]:
    return [_key(pk) if p == KEY_PLACEHOLDER else p for p in params]


def prepared_cursor(db: str) -> CursorWrapper:
    """Return a cursor on *db* that prepares its statements (``config.postgres``).

    Only for SQL compiled once and sent with its parameters: a statement is
    prepared per SQL text. A backend without prepared statements (another
    engine) hands out its plain cursor.
    """
    connection = connections[db]
    prepared = getattr(connection, "prepared_cursor", None)
    return connection.cursor() if prepared is None else prepared()


class CompiledRead:
    """One row by primary key, read with SQL compiled once per database alias.

    *build* turns ``Model.objects.filter(pk=KEY_PLACEHOLDER)`` into the final
    ``values_list()`` QuerySet (more filters, a lock, the columns); it runs
    once per alias. The alias is the one the caller's QuerySet reads from,
    so routers (replica or primary) decide as for any other read.
    """

    def __init__(self, build: Build) -> None:
        self._build = build
        self._compiled: dict[
            tuple[str, int], tuple[str, tuple[Any, ...], tuple[str, ...]]
        ] = {}

    def _statement(
        self, queryset: models.QuerySet[Any], count: int = 0
    ) -> tuple[str, str, tuple[Any, ...], tuple[str, ...]]:
        """Return the alias, SQL, parameters and columns for one key (*count* 0)
        or for *count* keys (``pk IN``, the n-th key at KEY_PLACEHOLDER - n)."""
        db = queryset.db
        compiled = self._compiled.get((db, count))
        if compiled is None:
            manager = queryset.model._default_manager.db_manager(db)
            keys = (
                manager.filter(pk__in=[KEY_PLACEHOLDER - n for n in range(count)])
                if count
                else manager.filter(pk=KEY_PLACEHOLDER)
            )
            values = self._build(keys)
            sql, params = values.query.get_compiler(db).as_sql()
            names = tuple(values.query.values_select)
            compiled = self._compiled[(db, count)] = (sql, tuple(params), names)
        return (db, *compiled)

    def fetchone(
        self, queryset: models.QuerySet[Any], pk: Any
    ) -> tuple[Any, ...] | None:
        """Return the values of row *pk* on *queryset*'s database, or None."""
        db, sql, params, _ = self._statement(queryset)
        with prepared_cursor(db) as cursor:
            cursor.execute(sql, _with_key(params, pk))
            return cursor.fetchone()

    def instance(self, queryset: models.QuerySet[Any], pk: Any) -> Any:
        """Return row *pk* as a model instance (``Model.from_db``), or None.

        *build* must list ``values_list()`` columns by attribute name (for
        example ``stored_attnames(model)``): they become the instance's
        loaded fields, the rest are deferred.
        """
        db, sql, params, names = self._statement(queryset)
        with prepared_cursor(db) as cursor:
            cursor.execute(sql, _with_key(params, pk))
            row = cursor.fetchone()
        return None if row is None else queryset.model.from_db(db, names, row)

    def fetchall(
        self, queryset: models.QuerySet[Any], pks: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        """Return the values of the rows *pks* (in no given order), one query.

        Compiled once per database alias and number of keys (a page holds at
        most a hundred). *pks* must be distinct.
        """
        if not pks:
            return []
        db, sql, params, _ = self._statement(queryset, len(pks))
        keys = {KEY_PLACEHOLDER - n: _key(pk) for n, pk in enumerate(pks)}
        with prepared_cursor(db) as cursor:
            cursor.execute(
                sql, [keys.get(p, p) if isinstance(p, int) else p for p in params]
            )
            return cursor.fetchall()
