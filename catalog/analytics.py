"""Dashboard figures, aggregated in PostgreSQL; shared by the API and the admin page."""

from __future__ import annotations

import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, DecimalField, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from catalog.models import Category, Product

DAYS = 30
LOW_STOCK_THRESHOLD = 5
LOW_STOCK_LIMIT = 10
CENT = Decimal("0.01")
_MONEY = DecimalField(max_digits=30, decimal_places=2)


def _money(value: Decimal | None) -> Decimal:
    return (value or Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP)


def _per_day(queryset: QuerySet, *, start: datetime.date, days: int) -> list[dict]:
    """Return one {date, count} per day from *start*, zeros included."""
    counts = dict(
        queryset.filter(
            created_at__gte=datetime.datetime.combine(
                start, datetime.time.min, tzinfo=datetime.UTC
            )
        )
        .annotate(day=TruncDate("created_at", tzinfo=datetime.UTC))
        .values("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    return [
        {"date": day, "count": counts.get(day, 0)}
        for day in (start + datetime.timedelta(days=i) for i in range(days))
    ]


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
    User = get_user_model()  # noqa: N806

    users = User.objects.aggregate(
        total=Count("pk"), active=Count("pk", filter=Q(is_active=True))
    )
    # One scan of the products, grouped by the integer key; names are joined
    # from the (small) category table afterwards.
    by_category = {
        row["category_id"]: row
        for row in Product.objects.order_by()
        .values("category_id")
        .annotate(
            products=Count("pk"),
            active_products=Count("pk", filter=Q(is_active=True)),
            low_stock=Count(
                "pk", filter=Q(is_active=True, stock__lte=low_stock_threshold)
            ),
            price_sum=Sum("price"),
            stock_value=Sum(F("price") * F("stock"), output_field=_MONEY),
            stock_units=Sum("stock"),
        )
    }
    categories = []
    for category in Category.objects.order_by("name").values("id", "name", "slug"):
        row = by_category.get(category["id"], {})
        count = row.get("products", 0)
        categories.append(
            {
                **category,
                "products": count,
                "active_products": row.get("active_products", 0),
                "low_stock_products": row.get("low_stock", 0),
                "average_price": _money(row["price_sum"] / count) if count else None,
                "stock_value": _money(row.get("stock_value")),
                "stock_units": row.get("stock_units") or 0,
                "_price_sum": row.get("price_sum") or Decimal(0),
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
    return {
        "generated_at": timezone.now(),
        "period": {"start": start, "end": today, "days": days},
        "totals": {
            "users": users["total"],
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
        "signups_per_day": _per_day(User.objects.order_by(), start=start, days=days),
        "products_per_day": _per_day(
            Product.objects.order_by(), start=start, days=days
        ),
        "low_stock": {"threshold": low_stock_threshold, "products": low_stock},
    }
