"""Dashboard figures, aggregated in PostgreSQL; shared by the API and the admin page."""

from __future__ import annotations

import datetime
import functools
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import models
from django.db.models import Count, F
from django.utils import timezone

from catalog.models import Category, CategoryStats, DayStats, Product
from config.compiled import prepared_cursor

DAYS = 30
# The threshold the database triggers count low stock at (catalog migration
# 0006 writes it into them): changing it needs a migration that rewrites them.
LOW_STOCK_THRESHOLD = 5
LOW_STOCK_LIMIT = 10
CENT = Decimal("0.01")


def _money(value: Decimal | None) -> Decimal:
    return (value or Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)


def _series(
    counts: dict[datetime.date, int], *, start: datetime.date, days: int
) -> list[dict[str, Any]]:
    """Return one {date, count} per day from *start*, zeros included."""
    return [
        {"date": day, "count": counts.get(day, 0)}
        for day in (start + datetime.timedelta(days=i) for i in range(days))
    ]


def _low_stock_by_category(threshold: int) -> dict[int, int]:
    """Return the active products at or under *threshold* per category, live.

    For a threshold other than the triggers' (LOW_STOCK_THRESHOLD); the
    partial low-stock index bounds the scan to those products.
    """
    return dict(
        Product.objects.filter(is_active=True, stock__lte=threshold)
        .order_by()
        .values("category_id")
        .annotate(n=Count("pk"))
        .values_list("category_id", "n")
    )


# CategoryStats' summed fields, in the order _categories_sql() returns them.
_CATEGORY_SUMS = (
    "products",
    "active_products",
    "low_stock_products",
    "price_sum",
    "stock_value",
    "stock_units",
)


def _columns(model: type[models.Model], *names: str) -> list[str]:
    return [model._meta.get_field(name).column for name in names]


@functools.cache
def _categories_sql() -> str:
    """Return the SQL of each category with the sums of its statistics rows, by name."""
    category = Category._meta.db_table
    stats = CategoryStats._meta.db_table
    key, *sums = _columns(CategoryStats, "category", *_CATEGORY_SUMS)
    summed = ", ".join(f"SUM({column}) AS {column}" for column in sums)
    pk, name, slug = _columns(Category, "id", "name", "slug")
    return (
        # Names from the models' metadata only, no input.
        f"SELECT c.{pk}, c.{name}, c.{slug}, {', '.join(f's.{c}' for c in sums)}"  # noqa: S608
        f" FROM {category} c LEFT JOIN"
        f" (SELECT {key}, {summed} FROM {stats} GROUP BY {key}) s"
        f" ON s.{key} = c.{pk} ORDER BY c.{name}, c.{pk}"
    )


@functools.cache
def _days_sql() -> str:
    """Return the SQL of the days' sums per subject: each day from a date, the rest."""
    subject, day, created, active = _columns(
        DayStats, "subject", "day", "created", "active"
    )
    return (
        f"SELECT {subject}, CASE WHEN {day} >= %s THEN {day} END,"  # noqa: S608
        f" SUM({created}), SUM({active})"
        f" FROM {DayStats._meta.db_table} GROUP BY 1, 2"
    )


def dashboard(
    *,
    today: datetime.date | None = None,
    days: int = DAYS,
    low_stock_threshold: int = LOW_STOCK_THRESHOLD,
    low_stock_limit: int = LOW_STOCK_LIMIT,
) -> dict[str, Any]:
    """Return the dashboard figures: totals, per category, per day, low stock."""
    today = today or timezone.now().astimezone(datetime.UTC).date()
    start = today - datetime.timedelta(days=days - 1)
    # Sums of the rows the database triggers append (catalog.models
    # CategoryStats and DayStats): a few thousand rows at most, whatever the
    # size of the tables they sum up. Both statements are compiled once and
    # prepared: the ORM spent more building them than PostgreSQL running them.
    with prepared_cursor(CategoryStats.objects.db) as cursor:
        cursor.execute(_categories_sql())
        category_rows = cursor.fetchall()
    with prepared_cursor(DayStats.objects.db) as cursor:
        cursor.execute(_days_sql(), [start])
        day_rows = cursor.fetchall()
    low_stock_live = (
        None
        if low_stock_threshold == LOW_STOCK_THRESHOLD
        else _low_stock_by_category(low_stock_threshold)
    )
    categories = []
    for pk, name, slug, count, active, low, price_sum, value, units in category_rows:
        # PostgreSQL sums bigints as numeric; a category without rows has NULLs.
        count = int(count or 0)
        price_sum = price_sum or Decimal(0)
        if low_stock_live is not None:
            low = low_stock_live.get(pk, 0)
        categories.append(
            {
                "id": pk,
                "name": name,
                "slug": slug,
                "products": count,
                "active_products": int(active or 0),
                "low_stock_products": int(low or 0),
                "average_price": _money(price_sum / count) if count else None,
                "stock_value": _money(value),
                "stock_units": int(units or 0),
                "_price_sum": price_sum,
            }
        )
    products = sum(c["products"] for c in categories)
    price_sum = sum((c.pop("_price_sum") for c in categories), Decimal(0))

    low_stock = list(
        Product.objects.filter(is_active=True, stock__lte=low_stock_threshold)
        .order_by("stock", "pk")
        .values("id", "sku", "name", "stock", category_name=F("category__name"))[
            :low_stock_limit
        ]
    )
    users = {"created": 0, "active": 0}
    per_day: dict[str, dict[datetime.date, int]] = {
        subject: {} for subject in DayStats.Subject.values
    }
    for subject, day, created, active in day_rows:
        if subject == DayStats.Subject.USERS:
            users["created"] += int(created)
            users["active"] += int(active)
        if day is not None:
            per_day.setdefault(subject, {})[day] = int(created)
    return {
        "generated_at": timezone.now(),
        "period": {"start": start, "end": today, "days": days},
        "totals": {
            "users": users["created"],
            "active_users": users["active"],
            "products": products,
            "active_products": sum(c["active_products"] for c in categories),
            "categories": len(categories),
            "low_stock_products": sum(c["low_stock_products"] for c in categories),
            "stock_units": sum(c["stock_units"] for c in categories),
            "stock_value": _money(sum((c["stock_value"] for c in categories), 0)),
            "average_price": _money(price_sum / products) if products else None,
        },
        "categories": categories,
        "signups_per_day": _series(
            per_day[DayStats.Subject.USERS], start=start, days=days
        ),
        "products_per_day": _series(
            per_day[DayStats.Subject.PRODUCTS], start=start, days=days
        ),
        "low_stock": {"threshold": low_stock_threshold, "products": low_stock},
    }
