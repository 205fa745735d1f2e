from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.postgres.search import SearchQuery
from django.db import connections, models
from django.db.models.expressions import RawSQL
from django.db.models.functions import Concat
from django.utils import timezone

from catalog.fields import PRODUCT_FIELDS
from catalog.invalidation import CATEGORY_WRITES, product_writes
from config.cache.namespaces import InvalidatingQuerySetMixin
from config.compiled import CompiledRead, stored_attnames
from config.counting import count_rows_sql, planned_row_count

if TYPE_CHECKING:
    from accounts.models import User

# How a search orders its matches (ProductQuerySet.order_search_by): a term
# estimated to match this share of rows or more walks the ordering's index;
# otherwise up to SEARCH_SORTED_UP_TO matches are sorted, more walk.
SEARCH_WALK_SHARE = 0.01
SEARCH_SORTED_UP_TO = 10_000

# What the API shows of a product, as flat values (no model instances), in the
# order product_row_representation reads them.
API_VALUES = (
    "id",
    *(field for field in PRODUCT_FIELDS if field != "category"),
    "created_at",
    "updated_at",
    "category__id",
    "category__name",
    "category__slug",
    "owner__id",
    "owner__username",
)
# The same for for_api()'s model instances: only() also needs the two foreign
# keys (the joined category and user rows are wide).
API_PRODUCT_COLUMNS = (*API_VALUES, "category", "owner")


def _estimated_share_sql(table: str, category_table: str) -> str:
    """Return SQL estimating a category's active products from pg_stats."""
    # Built from model metadata only, never from input.
    where = f"s.schemaname = current_schema() AND s.tablename = '{table}'"
    active_share = (
        "COALESCE((SELECT s.most_common_freqs[array_position("  # noqa: S608
        "s.most_common_vals::text::boolean[], true)]"
        f" FROM pg_stats s WHERE {where} AND s.attname = 'is_active'), 1)"
    )
    return (
        "COALESCE((SELECT (s.most_common_freqs[array_position("  # noqa: S608
        f's.most_common_vals::text::bigint[], "{category_table}".id)]'
        f" * GREATEST(c.reltuples, 0) * {active_share})::bigint"
        f" FROM pg_stats s JOIN pg_class c ON c.oid = '{table}'::regclass"
        f" WHERE {where} AND s.attname = 'category_id'), 0)"
    )


class CategoryQuerySet(InvalidatingQuerySetMixin, models.QuerySet["Category"]):
    cache_namespaces = CATEGORY_WRITES

    def with_product_counts(self) -> CategoryQuerySet:
        """Annotate ``product_count``: active products, counted by count_rows' rule.

        The exact part is an index-only probe of catalog_product_cat_new;
        the estimate is the planner statistics' share of the category times
        the table's row estimate and active fraction, so a catalog write's
        cache miss never groups every product.
        """
        table = self.model._meta.get_field("products").related_model._meta.db_table
        own = self.model._meta.db_table
        rows = (
            f"SELECT 1 FROM {table} p"  # noqa: S608
            f' WHERE p.category_id = "{own}".id AND p.is_active'
        )
        # Only table names from model metadata and constants: no user input.
        sql = count_rows_sql(rows, _estimated_share_sql(table, own))
        return self.annotate(
            product_count=RawSQL(sql, [], output_field=models.BigIntegerField())  # noqa: S611
        )


class ProductQuerySet(InvalidatingQuerySetMixin, models.QuerySet["Product"]):
    def _column_types(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Return {column: PostgreSQL type} of the model columns *rows* carry."""
        by_column = {f.column: f for f in self.model._meta.concrete_fields}
        connection = connections[self.db]
        types: dict[str, str] = {}
        for row in rows:
            for column in row:
                if column not in types and column != "id":
                    # Unknown keys raise KeyError: only model columns reach SQL.
                    field = by_column[column]
                    types[column] = (
                        field.rel_db_type(connection)
                        if field.is_relation
                        else field.db_type(connection)
                    )
        return types

    def cache_namespaces_written(
        self,
        *,
        created: bool = False,
        fields: Iterable[str] | None = None,
        pks: Iterable[Any] | None = None,
    ) -> tuple[str, ...]:
        """Return what a product write invalidates: its rows' details and lists."""
        return product_writes(pks=pks, created=created)

    def active(self) -> ProductQuerySet:
        """Return products on sale."""
        return self.filter(is_active=True)

    def visible_to(self, user: User | None) -> ProductQuerySet:
        """Return products *user* may see: all for staff, active ones for others."""
        if user is not None and user.is_authenticated and user.is_staff:
            return self
        return self.active()

    def for_api(self) -> ProductQuerySet:
        """Return products with their category and owner, joined in one query."""
        return self.select_related("category", "owner").only(*API_PRODUCT_COLUMNS)

    def api_row(self, pk: int, *, active_only: bool) -> tuple[Any, ...] | None:
        """Return the API_VALUES of product *pk* or None (inactive: if *active_only*).

        The hottest uncached read: its SQL is compiled once per database
        alias and visibility (config.compiled), and only the id changes.
        """
        return _API_ROWS[active_only].fetchone(self, pk)

    def api_rows(self, pks: Sequence[int]) -> list[tuple[Any, ...]]:
        """Return the API_VALUES of products *pks* (distinct; in no given order).

        A list page's products whose cached fragments are missing, compiled
        once per number of ids, as api_row() is.
        """
        return _API_ROWS[False].fetchall(self, pks)

    def locked_for_write(self, pk: int, *, active_only: bool) -> Any:
        """Return product *pk* with its row locked (FOR UPDATE), or None.

        A write's read of the row it changes: its own columns only (the
        caller attaches category and owner), compiled once per database alias
        and visibility as api_row() is. Call it inside a transaction.
        """
        return _LOCKED_ROWS[active_only].instance(self, pk)

    def search(self, q: str) -> ProductQuerySet:
        """Return products whose name or description match *q*, or whose SKU starts so.

        Words go through English full text (web-search syntax: words are
        ANDed, "quoted phrase", -word, or) against the stored
        ``search_document`` (GIN index ``catalog_product_search``); the SKU is
        a case-insensitive prefix (B-tree ``catalog_product_sku_upper``). No
        rank: the caller's ordering applies, through ``order_search_by``
        (which picks between walking the ordering's index and sorting the
        matches). Both predicates are cheap per row and have statistics.
        """
        q = q.strip()
        if not q:
            return self
        return self.filter(
            models.Q(
                search_document=SearchQuery(
                    q, config="english", search_type="websearch"
                )
            )
            | models.Q(sku__istartswith=q)
        )

    def insert_rows(
        self, *, rows: Sequence[Mapping[str, Any]], owner_id: int
    ) -> list[int]:
        """Insert cleaned product *rows* owned by *owner_id* in one statement.

        ``INSERT ... SELECT FROM unnest(arrays)`` sends one array per column
        instead of Django's one parameter per value (bulk_create builds model
        instances and adapts 11 parameters a row; docs/benchmarks.md has the
        comparison). Return the new ids in *rows* order.
        """
        if not rows:
            return []
        now = timezone.now()
        types = self._column_types(rows[:1])
        names = ", ".join(f'"{c}"' for c in types)
        arrays = ", ".join(f"%s::{t}[]" for t in types.values())
        sql = (
            f'INSERT INTO "{self.model._meta.db_table}" '  # noqa: S608
            f'({names}, "owner_id", "created_at", "updated_at") '
            f"SELECT {names}, %s, %s, %s FROM unnest({arrays}) "
            f"WITH ORDINALITY AS u({names}, ord) ORDER BY ord RETURNING id"
        )
        params: list[Any] = [owner_id, now, now]
        params.extend([row[c] for row in rows] for c in types)
        with connections[self.db].cursor() as cursor:
            cursor.execute(sql, params)
            ids = [pk for (pk,) in cursor.fetchall()]
        # Raw SQL sends no signal: invalidate like the other QuerySet writes.
        self._bump(created=True)
        return ids

    def update_rows(self, *, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Write each row's sent fields to the product with its ``id``, in one UPDATE.

        Rows may send different fields: a field a row leaves out travels as
        NULL and COALESCE keeps the stored value (every product column is NOT
        NULL, so NULL can only mean "not sent"). Django's bulk_update would
        build one CASE WHEN per field instead. Return the ids
        written; an id that names no product is skipped.
        """
        if not rows:
            return []
        types = self._column_types(rows)
        columns = list(types)
        table = self.model._meta.db_table
        # Only the first VALUES row needs casts; PostgreSQL types the rest from it.
        first = (
            "(" + ", ".join(["%s::bigint", *(f"%s::{types[c]}" for c in columns)]) + ")"
        )
        rest = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
        values = ", ".join([first, *([rest] * (len(rows) - 1))])
        params: list[Any] = []
        for row in rows:
            params.append(row["id"])
            params.extend(row.get(c) for c in columns)
        assignments = ", ".join(
            [f'"{c}" = COALESCE(v."{c}", p."{c}")' for c in columns]
            + ['"updated_at" = STATEMENT_TIMESTAMP()']
        )
        names = ", ".join(['"id"', *(f'"{c}"' for c in columns)])
        sql = (
            f'UPDATE "{table}" AS p SET {assignments} '  # noqa: S608
            f"FROM (VALUES {values}) AS v({names}) WHERE p.id = v.id RETURNING p.id"
        )
        with connections[self.db].cursor() as cursor:
            cursor.execute(sql, params)
            updated = [pk for (pk,) in cursor.fetchall()]
        if updated:
            # Raw SQL sends no signal: invalidate like the other QuerySet writes.
            self._bump(fields=[*columns, "updated_at"], pks=updated)
        return updated

    def order_search_by(self, *terms: str) -> ProductQuerySet:
        """Order a search's matches by *terms* with the plan their number calls for.

        Walking an ordering index and filtering row by row finds a page of a
        common word at once, but reads up to the whole table for a rare one;
        reading the matches from the search indexes and sorting them
        (``order_by_unindexed``) is the other way round (670,000 matches of
        "walnut" in 10,000,000 products). So: a term the statistics call
        common (at least SEARCH_WALK_SHARE of the rows; PostgreSQL's default
        guesses stay below) walks; otherwise one bounded probe counts the
        matches: up to SEARCH_SORTED_UP_TO are sorted, more walk (a page
        then lies within about page * rows / SEARCH_SORTED_UP_TO rows).
        """
        rows = planned_row_count(self.model._default_manager.all())
        if planned_row_count(self) >= rows * SEARCH_WALK_SHARE:
            return self.order_by(*terms)
        probe = self.order_by().values("pk")[: SEARCH_SORTED_UP_TO + 1]
        if probe.count() <= SEARCH_SORTED_UP_TO:
            return self.order_by_unindexed(*terms)
        return self.order_by(*terms)

    def order_by_unindexed(self, *terms: str) -> ProductQuerySet:
        """Order by *terms* through expressions no index can provide.

        PostgreSQL then cannot walk an ordering index and filter row by row
        (the whole table for a rare search term); it reads the matches from
        the search indexes and sorts them (top-N). Each ``sort_<field>``
        annotation keeps the order (and cursor values) of its field.
        """
        annotations = {}
        ordered = []
        for term in terms:
            field = term.lstrip("-")
            alias = f"sort_{field}"
            annotations[alias] = _unindexed(self.model._meta.get_field(field))
            ordered.append(term.replace(field, alias))
        return self.annotate(**annotations).order_by(*ordered)


def _unindexed(field: models.Field) -> models.Expression:
    """Return an expression equal to *field*'s column that no index matches."""
    column = models.F(field.name)
    if isinstance(field, models.CharField | models.TextField):
        return Concat(column, models.Value(""), output_field=field)
    if isinstance(field, models.DateTimeField):
        zero = models.Value(timedelta(0), output_field=models.DurationField())
        return models.ExpressionWrapper(column + zero, output_field=field)
    if field.primary_key:
        field = models.BigIntegerField()
    return models.ExpressionWrapper(column + models.Value(0), output_field=field)


def _visible(query: models.QuerySet[Any], active_only: bool) -> Any:
    return query.active() if active_only else query


# api_row() and locked_for_write(), by visibility (active products only or all).
_API_ROWS = {
    active_only: CompiledRead(
        lambda query, active_only=active_only: _visible(query, active_only).values_list(
            *API_VALUES
        )
    )
    for active_only in (False, True)
}
_LOCKED_ROWS = {
    active_only: CompiledRead(
        lambda query, active_only=active_only: (
            _visible(query, active_only)
            .values_list(*stored_attnames(query.model))
            .select_for_update()
        )
    )
    for active_only in (False, True)
}

CategoryManager = models.Manager.from_queryset(CategoryQuerySet)
ProductManager = models.Manager.from_queryset(ProductQuerySet)
