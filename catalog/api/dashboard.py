from __future__ import annotations

import datetime
import decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.analytics import dashboard
from catalog.api.serializers import iso_datetime
from catalog.invalidation import DASHBOARD_READS
from config.cache.views import CachedViewMixin


def _money(**kwargs: object) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=30, decimal_places=2, **kwargs)


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    days = serializers.IntegerField()


class TotalsSerializer(serializers.Serializer):
    users = serializers.IntegerField()
    active_users = serializers.IntegerField()
    products = serializers.IntegerField()
    active_products = serializers.IntegerField()
    categories = serializers.IntegerField()
    low_stock_products = serializers.IntegerField()
    stock_units = serializers.IntegerField()
    stock_value = _money()
    average_price = _money(allow_null=True)


class CategoryFiguresSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    products = serializers.IntegerField()
    active_products = serializers.IntegerField()
    low_stock_products = serializers.IntegerField()
    average_price = _money(allow_null=True)
    stock_value = _money()
    stock_units = serializers.IntegerField()


class DayCountSerializer(serializers.Serializer):
    date = serializers.DateField()
    count = serializers.IntegerField()


class LowStockProductSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    name = serializers.CharField()
    stock = serializers.IntegerField()
    category_name = serializers.CharField()


class LowStockSerializer(serializers.Serializer):
    threshold = serializers.IntegerField()
    products = LowStockProductSerializer(many=True)


class DashboardSerializer(serializers.Serializer):
    generated_at = serializers.DateTimeField()
    period = PeriodSerializer()
    totals = TotalsSerializer()
    categories = CategoryFiguresSerializer(many=True)
    signups_per_day = DayCountSerializer(many=True)
    products_per_day = DayCountSerializer(many=True)
    low_stock = LowStockSerializer()


# DRF's DecimalField(max_digits=30, decimal_places=2): quantized with a 30-digit
# context (its rounding), shown as a plain string.
_CENT = decimal.Decimal("0.01")
_DIGITS = decimal.Context(prec=30)


def _decimal(value: decimal.Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(_CENT, context=_DIGITS):f}"


def _days(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"date": d["date"].isoformat(), "count": d["count"]} for d in series]


def dashboard_representation(figures: dict[str, Any]) -> dict[str, Any]:
    """Return ``dashboard()``'s *figures* as DashboardSerializer declares them.

    Built directly, as product pages are (``catalog.api.serializers``): DRF's
    per-field machinery cost about as much as the dashboard's queries. A test
    compares both.
    """
    period = figures["period"]
    totals = figures["totals"]
    low_stock = figures["low_stock"]
    return {
        "generated_at": iso_datetime(
            figures["generated_at"], timezone.get_current_timezone()
        ),
        "period": {
            "start": period["start"].isoformat(),
            "end": period["end"].isoformat(),
            "days": period["days"],
        },
        "totals": {
            "users": totals["users"],
            "active_users": totals["active_users"],
            "products": totals["products"],
            "active_products": totals["active_products"],
            "categories": totals["categories"],
            "low_stock_products": totals["low_stock_products"],
            "stock_units": totals["stock_units"],
            "stock_value": _decimal(totals["stock_value"]),
            "average_price": _decimal(totals["average_price"]),
        },
        "categories": [
            {
                "id": c["id"],
                "name": c["name"],
                "slug": c["slug"],
                "products": c["products"],
                "active_products": c["active_products"],
                "low_stock_products": c["low_stock_products"],
                "average_price": _decimal(c["average_price"]),
                "stock_value": _decimal(c["stock_value"]),
                "stock_units": c["stock_units"],
            }
            for c in figures["categories"]
        ],
        "signups_per_day": _days(figures["signups_per_day"]),
        "products_per_day": _days(figures["products_per_day"]),
        "low_stock": {
            "threshold": low_stock["threshold"],
            "products": [
                {
                    "id": p["id"],
                    "sku": p["sku"],
                    "name": p["name"],
                    "stock": p["stock"],
                    "category_name": p["category_name"],
                }
                for p in low_stock["products"]
            ],
        },
    }


class DashboardView(CachedViewMixin, APIView):
    """Catalog and sign-up figures for staff; cached until the next write."""

    permission_classes = [IsAdminUser]
    cache_namespaces = DASHBOARD_READS

    def cache_key_extra(self, request: Request) -> str:
        """Return today's date: the per-day series move at midnight (UTC)."""
        return timezone.now().astimezone(datetime.UTC).date().isoformat()

    @extend_schema(responses=DashboardSerializer, tags=["analytics"])
    def get(self, request: Request) -> Response:
        """Return the dashboard figures."""
        return Response(dashboard_representation(dashboard()))
