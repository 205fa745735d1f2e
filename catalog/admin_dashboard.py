"""The admin analytics page: KPI tiles and server-side SVG charts (no JavaScript)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from catalog.analytics import dashboard
from catalog.invalidation import DASHBOARD_READS
from config.cache.views import get_or_compute
from config.db_router import fresh_reads

CHART_WIDTH = 640
CHART_HEIGHT = 200
AXIS_LEFT = 44
AXIS_BOTTOM = 22
ROW_HEIGHT = 26
LABEL_WIDTH = 150


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    label: str
    value: str
    text_x: float = 0.0


def _nice_max(value: float) -> float:
    """Return a round axis maximum at or above *value* (1, 2 or 5 times 10^n)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def column_chart(points: list[tuple[datetime.date, int]]) -> dict[str, Any]:
    """Return the bars, ticks and labels of a per-day column chart."""
    top = _nice_max(max((v for _, v in points), default=0))
    plot_w = CHART_WIDTH - AXIS_LEFT - 8
    plot_h = CHART_HEIGHT - AXIS_BOTTOM - 8
    slot = plot_w / max(len(points), 1)
    bars = []
    for i, (day, value) in enumerate(points):
        height = plot_h * value / top
        bars.append(
            Bar(
                x=round(AXIS_LEFT + i * slot + slot * 0.15, 1),
                y=round(8 + plot_h - height, 1),
                width=round(slot * 0.7, 1),
                height=round(height, 1),
                label=day.isoformat(),
                value=str(value),
            )
        )
    ticks = [
        {
            "x": AXIS_LEFT - 6,
            "y": round(8 + plot_h - plot_h * f, 1),
            "label": f"{top * f:g}",
        }
        for f in (0, 0.5, 1)
    ]
    # A date under every seventh bar keeps the axis readable.
    labels = [
        {"x": round(b.x + b.width / 2, 1), "text": b.label[5:]}
        for i, b in enumerate(bars)
        if (len(bars) - 1 - i) % 7 == 0
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "bars": bars,
        "ticks": ticks,
        "labels": labels,
        "axis_left": AXIS_LEFT,
        "axis_right": CHART_WIDTH - 8,
        "label_y": CHART_HEIGHT - 6,
        "total": sum(v for _, v in points),
        "total_text": f"{sum(v for _, v in points):,}",
    }


def row_chart(rows: list[tuple[str, Decimal | int]], *, money: bool) -> dict[str, Any]:
    """Return the bars of a horizontal bar chart, one row per category."""
    top = _nice_max(float(max((v for _, v in rows), default=0)))
    plot_w = CHART_WIDTH - LABEL_WIDTH - 90
    bars = []
    for i, (label, value) in enumerate(rows):
        width = plot_w * float(value) / top
        bars.append(
            Bar(
                x=LABEL_WIDTH,
                y=i * ROW_HEIGHT + 4,
                width=round(max(width, 1.0 if value else 0.0), 1),
                height=ROW_HEIGHT - 8,
                label=label if len(label) <= 22 else label[:21] + "…",
                value=f"{value:,.2f}" if money else f"{value:,}",
                text_x=round(LABEL_WIDTH + max(width, 1.0) + 6, 1),
            )
        )
    return {
        "width": CHART_WIDTH,
        "height": max(len(rows), 1) * ROW_HEIGHT,
        "bars": bars,
        "label_x": LABEL_WIDTH - 8,
    }


def _grouped(value: int) -> str:
    return f"{value:,}"


def _compact_money(value: Decimal | None) -> str:
    """Return *value* shortened for a tile (12.3 M); the title shows it exactly."""
    if value is None:
        return "–"
    for limit, suffix in ((Decimal(10**9), " bn"), (Decimal(10**6), " M")):
        if abs(value) >= limit:
            return f"{value / limit:,.1f}{suffix}"
    return f"{value:,.2f}"


def kpi_tiles(figures: dict[str, Any], *, signups: int, products: int) -> list[dict]:
    """Return the KPI tiles: label, shown value, exact value and a note."""
    totals = figures["totals"]
    days = figures["period"]["days"]
    low = figures["low_stock"]
    tiles = [
        ("Users", _grouped(totals["users"]), f"{totals['active_users']:,} active"),
        (
            "Products",
            _grouped(totals["products"]),
            f"{totals['active_products']:,} on sale",
        ),
        ("Categories", _grouped(totals["categories"]), ""),
        (
            "Stock value",
            _compact_money(totals["stock_value"]),
            f"{totals['stock_units']:,} units",
        ),
        ("Average price", _compact_money(totals["average_price"]), ""),
        (f"Sign-ups, {days} days", _grouped(signups), ""),
        (f"New products, {days} days", _grouped(products), ""),
        (
            "Low stock",
            _grouped(totals["low_stock_products"]),
            f"on sale, stock ≤ {low['threshold']}",
        ),
    ]
    exact = {
        "Stock value": f"{totals['stock_value']:,}",
        "Average price": f"{totals['average_price'] or 0:,}",
    }
    return [
        {"label": label, "value": value, "note": note, "title": exact.get(label, value)}
        for label, value, note in tiles
    ]


def cached_figures() -> dict[str, Any]:
    """Return the dashboard figures, shared through Redis until the next write."""
    today = timezone.now().astimezone(datetime.UTC).date().isoformat()
    key = f"analytics:dashboard:{today}"

    def compute() -> dict[str, Any]:
        with fresh_reads():  # never cache a lagging replica's figures
            return dashboard()

    figures, _ = get_or_compute(
        key,
        compute,
        timeout=settings.CACHE_TTL,
        namespaces=DASHBOARD_READS,
    )
    return figures


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Render the analytics dashboard for staff (wrapped by admin_view)."""
    figures = cached_figures()
    categories = figures["categories"]
    signups = column_chart(
        [(d["date"], d["count"]) for d in figures["signups_per_day"]]
    )
    products = column_chart(
        [(d["date"], d["count"]) for d in figures["products_per_day"]]
    )
    context = {
        **admin.site.each_context(request),
        "title": "Analytics dashboard",
        "figures": figures,
        "totals": figures["totals"],
        "kpis": kpi_tiles(
            figures, signups=signups["total"], products=products["total"]
        ),
        "column_charts": [
            {**signups, "heading": "Sign-ups per day", "css": "bar"},
            {**products, "heading": "New products per day", "css": "bar-alt"},
        ],
        "row_charts": [
            {
                **row_chart(
                    [(c["name"], c["products"]) for c in categories], money=False
                ),
                "heading": "Products per category",
                "css": "bar",
            },
            {
                **row_chart(
                    [(c["name"], c["stock_value"]) for c in categories], money=True
                ),
                "heading": "Stock value per category",
                "css": "bar-alt",
            },
        ],
    }
    return TemplateResponse(request, "admin/catalog/dashboard.html", context)
