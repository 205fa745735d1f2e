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
import threading
import time
from collections import OrderedDict

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.utils.functional import cached_property

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
_PLAN_ESTIMATES_KEPT = 512
_plan_estimates: OrderedDict[tuple[str, str, str], tuple[float, int]] = OrderedDict()
_plan_estimates_lock = threading.Lock()


def planned_row_count(queryset: QuerySet) -> int:
    """Return the planner's row estimate for *queryset* (EXPLAIN, nothing is read).

    An estimate is reused for PLAN_ESTIMATE_SECONDS per query and parameters.
    """
    sql, params = queryset.values("pk").query.sql_with_params()
    key = (queryset.db, sql, repr(params))
    now = time.monotonic()
    with _plan_estimates_lock:
        kept = _plan_estimates.get(key)
    if kept is not None and kept[0] > now:
        return kept[1]
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    with _plan_estimates_lock:
        _plan_estimates[key] = (now + PLAN_ESTIMATE_SECONDS, estimate)
        _plan_estimates.move_to_end(key)
        while len(_plan_estimates) > _PLAN_ESTIMATES_KEPT:
            _plan_estimates.popitem(last=False)
    return estimate


def count_rows(queryset: QuerySet) -> int:
    """Return *queryset*'s row count: exact up to COUNT_EXACT_UP_TO, else estimated."""
    queryset = queryset.order_by()
    limit = COUNT_EXACT_UP_TO
    if not queryset.query.where and not queryset.query.distinct:
        # The table's own estimate costs no scan: trust it when it is big.
        estimate = estimated_row_count(queryset.model, queryset.db)
        if estimate > limit:
            return estimate
    exact = queryset.values("pk")[: limit + 1].count()
    if exact <= limit:
        return exact
    return max(planned_row_count(queryset), exact)


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
