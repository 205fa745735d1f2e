from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils.text import slugify

from catalog.models import Product
from config.bulkio import UpsertResult, copy_rows


@transaction.atomic
def products_set_active(*, products: QuerySet[Product], active: bool) -> int:
    """Put *products* on sale or take them off, in one statement."""
    return products.exclude(is_active=active).update(is_active=active)


# --- Bulk upsert (import_products) ------------------------------------------

# Written only when a row carries them, so a file without the column keeps the
# stored values; a new product gets the model default (slug: from its name).
UPSERT_OPTIONAL_FIELDS = ("slug", "description", "stock", "is_active")
_UPSERT_DEFAULTS: dict[str, Any] = {"description": "", "stock": 0, "is_active": True}
_PRODUCT_STAGE = "catalog_product_upsert_stage"
_PRODUCT_COLUMNS = (
    "sku",
    "name",
    "slug",
    "description",
    "price",
    "stock",
    "is_active",
    "category_id",
    "owner_id",
)
_ALWAYS_WRITTEN = ("name", "price", "category_id", "owner_id")


def categories_ensure(*, slugs: Collection[str]) -> dict[str, int]:
    """Return {slug: id} for *slugs*, creating the missing categories at once."""
    wanted = sorted(set(slugs))
    if not wanted:
        return {}
    names = [slug.replace("-", " ").replace("_", " ").title()[:100] for slug in wanted]
    with connection.cursor() as cursor:
        # One statement: the SELECT sees the rows as they were before the INSERT,
        # so existing slugs come from it and new ones from RETURNING.
        cursor.execute(
            "WITH wanted AS ("
            "  SELECT * FROM unnest(%s::text[], %s::text[]) AS w(slug, name)"
            "), created AS ("
            "  INSERT INTO catalog_category (name, slug, created_at, updated_at)"
            "  SELECT name, slug, now(), now() FROM wanted"
            "  ON CONFLICT (slug) DO NOTHING RETURNING slug, id"
            ") SELECT slug, id FROM created"
            " UNION ALL SELECT c.slug, c.id FROM catalog_category c"
            " JOIN wanted USING (slug)",
            [wanted, names],
        )
        ids = dict(cursor.fetchall())
        missing = [slug for slug in wanted if slug not in ids]
        if missing:
            # Created by a concurrent transaction after this statement began.
            cursor.execute(
                "SELECT slug, id FROM catalog_category WHERE slug = ANY(%s)",
                [missing],
            )
            ids.update(cursor.fetchall())
    return ids


def _product_merge_sql(given: Sequence[str]) -> str:
    written = [*_ALWAYS_WRITTEN, *given]
    columns = ", ".join(_PRODUCT_COLUMNS)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in written)
    stored = ", ".join(f"p.{c}" for c in written)
    incoming = ", ".join(f"EXCLUDED.{c}" for c in written)
    return (
        "WITH merged AS ("  # noqa: S608 - identifiers are module constants
        f" INSERT INTO catalog_product AS p ({columns}, created_at, updated_at)"
        f" SELECT {columns}, now(), now() FROM {_PRODUCT_STAGE} WHERE grp = %s"
        f" ON CONFLICT (sku) DO UPDATE SET {assignments},"
        " updated_at = EXCLUDED.updated_at"
        f" WHERE ({stored}) IS DISTINCT FROM ({incoming})"
        " RETURNING xmax = 0 AS inserted"
        ") SELECT count(*) FILTER (WHERE inserted), count(*) FROM merged"
    )


@transaction.atomic
def products_upsert(*, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
    """Insert or update products by SKU in bulk; identical rows are left untouched.

    Each row holds clean_product's values: sku, name, price, category_id and
    owner_id, plus any of UPSERT_OPTIONAL_FIELDS. A SKU repeated in *rows*: the
    last one wins. Rows are staged with COPY into a temporary table and merged
    with one INSERT ... ON CONFLICT (sku) DO UPDATE ... WHERE IS DISTINCT FROM
    per set of optional columns, so unchanged rows are neither written nor
    counted as updated.
    """
    latest = {row["sku"]: row for row in rows}
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in latest.values():
        given = tuple(f for f in UPSERT_OPTIONAL_FIELDS if f in row)
        groups.setdefault(given, []).append(row)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_PRODUCT_STAGE} ("
            " grp integer, sku text, name text, slug text, description text,"
            " price numeric(12, 2), stock integer, is_active boolean,"
            " category_id bigint, owner_id bigint"
            ") ON COMMIT DELETE ROWS"
        )
        cursor.execute(f"TRUNCATE {_PRODUCT_STAGE}")
    copy_rows(
        _PRODUCT_STAGE,
        ("grp", *_PRODUCT_COLUMNS),
        (
            (
                grp,
                row["sku"],
                row["name"],
                row.get("slug") or slugify(row["name"])[:200],
                row.get("description", _UPSERT_DEFAULTS["description"]),
                row["price"],
                row.get("stock", _UPSERT_DEFAULTS["stock"]),
                row.get("is_active", _UPSERT_DEFAULTS["is_active"]),
                row["category_id"],
                row["owner_id"],
            )
            for grp, group in enumerate(groups.values())
            for row in group
        ),
    )
    result = UpsertResult()
    with connection.cursor() as cursor:
        for grp, (given, group) in enumerate(groups.items()):
            cursor.execute(_product_merge_sql(given), [grp])
            created, written = cursor.fetchone()
            result += UpsertResult(created, written - created, len(group) - written)
    return result
