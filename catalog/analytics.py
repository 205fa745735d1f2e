"""Dashboard figures, aggregated in PostgreSQL; shared by the API and the admin page."""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Count, F, Sum
from django.utils import timezone

from catalog.models import Category, CategoryStats, DayStats, Product

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
    # size of the tables they sum up.
    by_category = {
        row["category_id"]: row
        for row in CategoryStats.objects.order_by()
        .values("category_id")
        .annotate(
            n=Sum("products"),
            active=Sum("active_products"),
            low=Sum("low_stock_products"),
            price=Sum("price_sum"),
            value=Sum("stock_value"),
            units=Sum("stock_units"),
        )
    }
    low_stock_live = (
        None
        if low_stock_threshold == LOW_STOCK_THRESHOLD
        else _low_stock_by_category(low_stock_threshold)
    )
    categories = []
    for category in Category.objects.order_by("name").values("id", "name", "slug"):
        row = by_category.get(category["id"], {})
        # PostgreSQL sums bigints as numeric.
        count = int(row.get("n") or 0)
        price_sum = row.get("price") or Decimal(0)
        low = (
            row.get("low") or 0
            if low_stock_live is None
            else low_stock_live.get(category["id"], 0)
        )
        categories.append(
            {
                **category,
                "products": count,
                "active_products": int(row.get("active") or 0),
                "low_stock_products": int(low),
                "average_price": _money(price_sum / count) if count else None,
                "stock_value": _money(row.get("value")),
                "stock_units": int(row.get("units") or 0),
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
    users = DayStats.objects.filter(subject=DayStats.Subject.USERS).aggregate(
        total=Sum("created", default=0), active=Sum("active", default=0)
    )
    per_day: dict[str, dict[datetime.date, int]] = {
        subject: {} for subject in DayStats.Subject.values
    }
    for subject, day, n in (
        DayStats.objects.filter(day__gte=start)
        .order_by()
        .values("subject", "day")
        .annotate(n=Sum("created"))
        .values_list("subject", "day", "n")
    ):
        per_day[subject][day] = int(n)
    return {
        "generated_at": timezone.now(),
        "period": {"start": start, "end": today, "days": days},
        "totals": {
            "users": int(users["total"]),
            "active_users": int(users["active"]),
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
