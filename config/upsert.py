"""Bulk writes through PostgreSQL COPY: straight into a table, or staged and merged.

A batch whose keys are all new is copied straight into its table. Otherwise it
is copied into a temporary twin of the table (the stage), rows identical to
the stored ones are dropped from it, and one ``INSERT ... SELECT ... ON
CONFLICT`` per set of given columns merges the rest. Both apps' imports and
``seed_demo`` write this way; what differs is a ``MergeTarget``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connection, models, transaction

from config.bulkio import UpsertResult

UNIQUE_VIOLATION = "23505"
# Longer than PostgreSQL's deadlock_timeout (1 s), after which an autovacuum
# in the way of a VACUUM cancels itself.
VACUUM_LOCK_WAIT = "10s"


@dataclass(frozen=True)
class MergeTarget:
    """Where staged rows go and how a staged row meets the stored one.

    *columns* are what every staged row holds, in order. *conflict* is the ON
    CONFLICT target (``"(sku)"``); empty, any unique key conflicts and rows
    are only inserted. *match* finds the stored row ``t`` of a staged row
    ``s`` (``"t.sku = s.sku"``) to drop identical rows before the merge.
    *always* are written on conflict by every row, besides its given columns;
    *inserted* gives the SQL values of a new row's other columns. *returning*
    and *aggregate* add what the merge reports of the merged rows (a
    ``merged`` CTE with ``inserted`` and the *returning* columns).
    """

    model: type[models.Model]
    columns: tuple[str, ...]
    conflict: str = ""
    match: str = ""
    always: tuple[str, ...] = ()
    inserted: Mapping[str, str] = field(default_factory=dict)
    returning: tuple[str, ...] = ()
    aggregate: str = ""

    @property
    def table(self) -> str:
        """Return the target table's name."""
        return self.model._meta.db_table

    @property
    def stage(self) -> str:
        """Return the name of this target's temporary stage table."""
        shape = zlib.crc32(",".join(self.columns).encode())
        return f"{self.table}_stage_{shape:08x}"


def copy_rows(
    table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Load *rows* into *table* with PostgreSQL COPY on the default connection."""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    # COPY bypasses CursorWrapper.execute: map psycopg errors to Django's here.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def may_skip_triggers_sql() -> str:
    """Return SQL saying whether this session may set session_replication_role."""
    # Superusers, or a GRANT SET ON PARAMETER (PostgreSQL 15+); a session
    # already replicating is left alone.
    privilege = (
        "current_setting('is_superuser') = 'on'"
        if connection.pg_version < 150000
        else "has_parameter_privilege('session_replication_role', 'SET')"
    )
    return f"current_setting('session_replication_role') = 'origin' AND {privilege}"


def _references_locked(target: MergeTarget, rows: Sequence[Sequence[Any]]) -> bool:
    # What the deferred foreign-key triggers would do once per row, done once
    # per batch: lock each referenced row FOR KEY SHARE until commit (a
    # concurrent DELETE then waits, and its own check sees these rows), and
    # say whether every one of them exists.
    counts, params, wanted = [], [], []
    for at, column in enumerate(target.columns):
        fk = next(
            (
                f
                for f in target.model._meta.concrete_fields
                if f.is_relation and f.column == column
            ),
            None,
        )
        if fk is None:
            continue
        meta = fk.related_model._meta
        keys = {row[at] for row in rows}
        if all(type(key) is int for key in keys):
            # A few thousand ids go 4x faster as one text than as an array
            # parameter (psycopg dumps those element by element in Python).
            wanted_keys = "string_to_array(%s, ',')::bigint[]"
            params.append(",".join(map(str, keys)))
        else:
            wanted_keys = "%s"
            params.append(list(keys))
        counts.append(
            f"(SELECT count(*) FROM (SELECT FROM {meta.db_table}"  # noqa: S608
            f" WHERE {meta.pk.column} = ANY({wanted_keys}) FOR KEY SHARE) r{at})"
        )
        wanted.append(len(keys))
    if not counts:
        return True
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(counts)}", params)
        return list(cursor.fetchone()) == wanted


def copy_new(
    target: MergeTarget, rows: Sequence[Sequence[Any]], *, skip_triggers: bool
) -> bool:
    """COPY *rows* straight into the target table; False if a unique key is taken.

    Runs in a savepoint, so a unique violation writes nothing and the caller
    merges instead. With *skip_triggers* (the session may set
    session_replication_role), the referenced rows are checked and locked in
    one query, and the COPY runs without the per-row foreign-key triggers
    (on a first load about as long as the COPY itself).
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            skip = skip_triggers and _references_locked(target, rows)
            if skip:
                cursor.execute("SET LOCAL session_replication_role = replica")
            copy_rows(target.table, target.columns, rows)
            if skip:
                # Only the COPY skips them: the rest of the transaction (and
                # the trigger events queued before) keeps the usual checks.
                cursor.execute("SET LOCAL session_replication_role = origin")
    except IntegrityError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != UNIQUE_VIOLATION:
            raise
        return False
    return True


def _row(prefix: str, columns: Sequence[str]) -> str:
    return f"ROW({', '.join(f'{prefix}.{c}' for c in columns)})"


def _unchanged_sql(target: MergeTarget, written: Sequence[str]) -> str:
    # ON CONFLICT DO UPDATE locks the existing row even when its WHERE is
    # false; dropping identical rows from the stage first means a rerun
    # neither dirties their pages nor waits on rows other sessions hold.
    same = (
        f" AND {_row('t', written)} IS NOT DISTINCT FROM {_row('s', written)}"
        if written
        else ""
    )
    return (
        f"DELETE FROM {target.stage} s USING {target.table} t"  # noqa: S608
        f" WHERE s.grp = %s AND {target.match}{same}"
    )


def _merge_sql(target: MergeTarget, written: Sequence[str]) -> str:
    columns = ", ".join(target.columns)
    other = ", ".join(["", *target.inserted]) if target.inserted else ""
    values = ", ".join(["", *target.inserted.values()]) if target.inserted else ""
    if written:
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in written)
        if "updated_at" in target.inserted:
            assignments += ", updated_at = EXCLUDED.updated_at"
        conflict = (
            f" ON CONFLICT {target.conflict} DO UPDATE SET {assignments}"
            f" WHERE {_row('t', written)} IS DISTINCT FROM {_row('EXCLUDED', written)}"
        )
    else:
        conflict = f" ON CONFLICT {target.conflict} DO NOTHING"
    returning = ", ".join(["xmax = 0 AS inserted", *target.returning])
    aggregate = f", {target.aggregate}" if target.aggregate else ""
    return (
        f"WITH merged AS (INSERT INTO {target.table} AS t"  # noqa: S608
        f" ({columns}{other}) SELECT {columns}{values} FROM {target.stage}"
        f" WHERE grp = %s{conflict} RETURNING {returning})"
        f" SELECT count(*) FILTER (WHERE inserted), count(*){aggregate} FROM merged"
    )


@transaction.atomic(savepoint=False)
def staged_merge(
    target: MergeTarget, groups: Mapping[tuple[str, ...], Sequence[Sequence[Any]]]
) -> tuple[UpsertResult, list[tuple[Any, ...]]]:
    """Insert or update rows through a COPY-filled stage; identical rows stay as is.

    *groups* maps the columns a set of rows gives (written on conflict, with
    the target's *always*) to those rows, each holding the target's
    *columns*. Return the counts and, per group, the target's *aggregate*
    values.
    """
    stage = target.stage
    with connection.cursor() as cursor:
        # A twin with the table's column types, emptied at commit and reused
        # by the next batch of the session.
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS"  # noqa: S608 - identifiers from model metadata
            f" SELECT 0 AS grp, {', '.join(target.columns)}"
            f" FROM {target.table} WITH NO DATA"
        )
        cursor.execute(f"TRUNCATE {stage}")
    copy_rows(
        stage,
        ("grp", *target.columns),
        ((grp, *row) for grp, rows in enumerate(groups.values()) for row in rows),
    )
    result = UpsertResult()
    extras: list[tuple[Any, ...]] = []
    with connection.cursor() as cursor:
        for grp, (given, rows) in enumerate(groups.items()):
            written = (*target.always, *given)
            if target.match:
                cursor.execute(_unchanged_sql(target, written), [grp])
            cursor.execute(_merge_sql(target, written), [grp])
            created, merged, *extra = cursor.fetchone()
            result += UpsertResult(created, merged - created, len(rows) - merged)
            extras.append(tuple(extra))
    return result, extras


def insert_missing(
    target: MergeTarget, rows: Sequence[Sequence[Any]], *, skip_triggers: bool
) -> int:
    """Insert the *rows* no unique key of the target table holds; return how many.

    COPY straight in (copy_new) when none is taken, else stage and insert
    with ON CONFLICT DO NOTHING. The target should have no *conflict*.
    """
    if not rows:
        return 0
    if copy_new(target, rows, skip_triggers=skip_triggers):
        return len(rows)
    result, _ = staged_merge(target, {(): rows})
    return result.created


def analyze(*models_: type[models.Model], vacuum: bool = False) -> bool:
    """Refresh the planner statistics of the models' tables after a bulk load.

    With *vacuum* (and outside a transaction, where VACUUM cannot run), the
    tables are vacuumed too: a table just loaded has no page marked
    all-visible, so its index-only scans fetch every row from the heap until
    autovacuum gets round to it (a list by category at 10,000,000 products:
    32 ms, 18 ms after a VACUUM that took 9 s). Return whether they were.
    The VACUUM has no time limit but waits at most VACUUM_LOCK_WAIT for its
    lock, which another VACUUM, ANALYZE or index build may hold.
    """
    vacuum = vacuum and not connection.in_atomic_block
    command = "VACUUM (ANALYZE)" if vacuum else "ANALYZE"
    with connection.cursor() as cursor:
        if vacuum:
            # A big table's VACUUM outlasts statement_timeout; both settings
            # change for it only (VACUUM runs outside a transaction: no SET
            # LOCAL).
            cursor.execute(
                "SELECT current_setting('statement_timeout'),"
                " current_setting('lock_timeout')"
            )
            timeouts = cursor.fetchone()
            cursor.execute(
                "SELECT set_config('statement_timeout', '0', false),"
                " set_config('lock_timeout', %s, false)",
                [VACUUM_LOCK_WAIT],
            )
        try:
            for model in models_:
                cursor.execute(f"{command} {model._meta.db_table}")
        finally:
            if vacuum:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, false),"
                    " set_config('lock_timeout', %s, false)",
                    timeouts,
                )
    return vacuum
