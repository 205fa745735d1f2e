"""Counts that never run a COUNT(*) over a big table: one rule, one threshold.

Up to COUNT_EXACT_UP_TO matching rows the count is exact; beyond, it is
PostgreSQL's estimate (the table's row estimate when nothing filters it, the
planner's estimate for the query otherwise), never below COUNT_EXACT_UP_TO + 1.
The API's pagination (``config.api.pagination``), the admin's changelists
(``EstimatedCountPaginator``) and the category product counts
(``catalog.managers``, through ``count_rows_sql``) all apply it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.utils.functional import cached_property

from config.lru import LRU

# Counting this many matching rows stays cheap even where each needs a heap
# visit; beyond it only an estimate is worth its cost.
COUNT_EXACT_UP_TO = 1_000


def estimated_row_count(model: type[Model], using: str = "default") -> int:
    """Return the planner's estimate of *model*'s row count (-1 if never analysed)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else -1


# Plan estimates move only with ANALYZE and the table's size: one is reused
# for this long per query and parameters, sparing the EXPLAIN round trip.
PLAN_ESTIMATE_SECONDS = 10.0
_plan_estimates: LRU[tuple[str, str, str], tuple[float, int]] = LRU(maxsize=512)


def planned_row_count(queryset: QuerySet) -> int:
    """Return the planner's row estimate for *queryset* (EXPLAIN, nothing is read).

    An estimate is reused for PLAN_ESTIMATE_SECONDS per query and parameters.
    """
    sql, params = queryset.values("pk").query.sql_with_params()
    return _planned_rows(sql, params, queryset.db)


def _planned_rows(sql: str, params: Sequence[Any], using: str) -> int:
    key = (using, sql, repr(params))
    now = time.monotonic()
    kept = _plan_estimates.get(key)
    if kept is not None and kept[0] > now:
        return kept[1]
    with connections[using].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    _plan_estimates.put(key, (now + PLAN_ESTIMATE_SECONDS, estimate))
    return estimate


@dataclass(frozen=True)
class RowCount:
    """count_rows' rule for one query, compiled once: ``run()`` it any number of times.

    Compiling a QuerySet costs more CPU than running its count; a list whose
    SQL does not change from one request to the next (``config.api.pagination``
    keeps them) compiles it once.
    """

    model: type[Model]
    filtered: bool  # a WHERE or DISTINCT: the table's estimate does not apply
    sql: str  # SELECT of the matching primary keys, unordered
    params: tuple[Any, ...]

    @classmethod
    def of(cls, queryset: QuerySet) -> RowCount:
        """Compile *queryset*'s count."""
        queryset = queryset.order_by()
        sql, params = queryset.values("pk").query.sql_with_params()
        filtered = bool(queryset.query.where or queryset.query.distinct)
        return cls(queryset.model, filtered, sql, tuple(params))

    def first_step(self) -> tuple[str, tuple[Any, ...]]:
        """Return one SELECT (and its parameters) of the count's first step.

        It yields the exact count up to COUNT_EXACT_UP_TO + 1 (a capped scan),
        or, for an unfiltered query, the table's own estimate when that is
        bigger (then nothing is scanned: PostgreSQL evaluates only the CASE
        branch taken). ``settle()`` turns its value into the count; a caller
        may send it along with other statements in one round trip.
        """
        cap = COUNT_EXACT_UP_TO + 1
        capped = f"SELECT COUNT(*) FROM ({self.sql} LIMIT {cap}) capped"  # noqa: S608 - compiled by the ORM
        if self.filtered:
            return capped, self.params
        return (
            f"SELECT CASE WHEN t.estimate > {COUNT_EXACT_UP_TO} THEN t.estimate"  # noqa: S608
            f" ELSE ({capped}) END FROM (SELECT reltuples::bigint AS estimate"
            " FROM pg_class WHERE oid = %s::regclass) t",
            (self.model._meta.db_table, *self.params),
        )

    def settle(self, first: int, using: str) -> int:
        """Return the count, given the value of ``first_step()``'s SELECT."""
        if first <= COUNT_EXACT_UP_TO:
            return first
        if not self.filtered and first > COUNT_EXACT_UP_TO + 1:
            return first  # the table's estimate
        return max(_planned_rows(self.sql, self.params, using), first)

    def run(self, using: str) -> int:
        """Return the count: exact up to COUNT_EXACT_UP_TO, else estimated."""
        sql, params = self.first_step()
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            first = cursor.fetchone()[0]
        return self.settle(first, using)


def count_rows(queryset: QuerySet) -> int:
    """Return *queryset*'s row count: exact up to COUNT_EXACT_UP_TO, else estimated."""
    try:
        counted = RowCount.of(queryset)
    except EmptyResultSet:
        return 0  # no row can match (e.g. an id beyond bigint): no SQL to run
    return counted.run(queryset.db)


def count_rows_sql(rows: str, estimate: str) -> str:
    """Return SQL applying count_rows' rule to the rows a SELECT *rows* returns.

    *estimate* is SQL for the estimate used beyond COUNT_EXACT_UP_TO rows.
    Both come from model metadata and constants, never from input.
    """
    limit = COUNT_EXACT_UP_TO
    capped = f"(SELECT COUNT(*) FROM ({rows} LIMIT {limit + 1}) capped)"  # noqa: S608
    return (
        f"CASE WHEN {capped} <= {limit} THEN {capped}"
        f" ELSE GREATEST({estimate}, {limit + 1}) END"
    )


class EstimatedCountPaginator(Paginator):
    """The admin's paginator: counts by count_rows, never a big COUNT(*)."""

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return count_rows(self.object_list)
        return len(self.object_list)
