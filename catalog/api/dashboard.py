from __future__ import annotations

import datetime

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.analytics import dashboard
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
        return Response(DashboardSerializer(dashboard()).data)
