"""Counting that stays cheap on big tables."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.utils.functional import cached_property

# Below this many rows an exact COUNT(*) is cheap enough to run every time.
EXACT_COUNT_THRESHOLD = 100_000


def estimated_row_count(model: type[Model], using: str = "default") -> int:
    """Return the planner's estimate of *model*'s row count (-1 if never analysed)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else -1


def fast_count(queryset: QuerySet) -> int:
    """Return the row count, estimated for an unfiltered queryset on a big table."""
    if not queryset.query.where and not queryset.query.distinct:
        estimate = estimated_row_count(queryset.model, queryset.db)
        if estimate >= EXACT_COUNT_THRESHOLD:
            return estimate
    return queryset.count()


class EstimatedCountPaginator(Paginator):
    """Paginator whose count is the planner estimate for unfiltered big tables."""

    @cached_property
    def count(self) -> int:
        if isinstance(self.object_list, QuerySet):
            return fast_count(self.object_list)
        return len(self.object_list)
