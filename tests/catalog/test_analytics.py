import datetime
import json
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers

from catalog.analytics import dashboard
from catalog.api.dashboard import DashboardSerializer, dashboard_representation
from catalog.models import Product
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = reverse("api:analytics-dashboard")


def days_ago(n: int) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(days=n)


@pytest.fixture
def catalog(db):
    """Two categories with known figures, one empty category, and old rows."""
    owner = UserFactory(created_at=days_ago(400))
    UserFactory(created_at=days_ago(2), is_active=False)
    UserFactory.create_batch(2, created_at=days_ago(0))
    tools = CategoryFactory(name="Tools")
    toys = CategoryFactory(name="Toys")
    CategoryFactory(name="Empty")
    ProductFactory(
        category=tools, owner=owner, price=Decimal("10.00"), stock=3, sku="T-1"
    )
    ProductFactory(
        category=tools,
        owner=owner,
        price=Decimal("20.00"),
        stock=1,
        sku="T-2",
        created_at=days_ago(45),
    )
    ProductFactory(
        category=toys,
        owner=owner,
        price=Decimal("5.50"),
        stock=100,
        sku="Y-1",
        created_at=days_ago(1),
    )
    ProductFactory(
        category=toys,
        owner=owner,
        price=Decimal("1.00"),
        stock=0,
        sku="Y-2",
        is_active=False,
    )
    return {"tools": tools, "toys": toys}


def test_totals_and_categories_are_aggregated(catalog):
    figures = dashboard()
    assert figures["totals"] == {
        "users": 4,
        "active_users": 3,
        "products": 4,
        "active_products": 3,
        "categories": 3,
        "low_stock_products": 2,
        "stock_units": 104,
        "stock_value": Decimal("600.00"),
        "average_price": Decimal("9.13"),
    }
    by_name = {c["name"]: c for c in figures["categories"]}
    assert by_name["Tools"]["products"] == 2
    assert by_name["Tools"]["average_price"] == Decimal("15.00")
    assert by_name["Tools"]["stock_value"] == Decimal("50.00")
    assert by_name["Toys"]["active_products"] == 1
    assert by_name["Toys"]["stock_value"] == Decimal("550.00")
    assert by_name["Empty"] == {
        "id": by_name["Empty"]["id"],
        "name": "Empty",
        "slug": by_name["Empty"]["slug"],
        "products": 0,
        "active_products": 0,
        "low_stock_products": 0,
        "average_price": None,
        "stock_value": Decimal("0.00"),
        "stock_units": 0,
    }


def test_per_day_series_cover_thirty_days_with_zeros(catalog):
    figures = dashboard()
    today = timezone.now().date()
    signups = figures["signups_per_day"]
    products = figures["products_per_day"]
    assert [d["date"] for d in signups] == [
        today - datetime.timedelta(days=29 - i) for i in range(30)
    ]
    assert signups[-1]["count"] == 2
    assert signups[-3]["count"] == 1
    assert sum(d["count"] for d in signups) == 3  # the 400-day-old owner is out
    assert products[-1]["count"] == 2
    assert products[-2]["count"] == 1
    assert sum(d["count"] for d in products) == 3  # the 45-day-old one is out


def test_low_stock_lists_active_products_at_or_under_threshold(catalog):
    low = dashboard(low_stock_threshold=3)["low_stock"]
    assert low["threshold"] == 3
    assert [(p["sku"], p["stock"], p["category_name"]) for p in low["products"]] == [
        ("T-2", 1, "Tools"),
        ("T-1", 3, "Tools"),
    ]


def test_query_count_does_not_grow_with_rows(catalog, django_assert_num_queries):
    with django_assert_num_queries(3):
        dashboard()
    category = catalog["tools"]
    ProductFactory.create_batch(
        20, category=category, owner=Product.objects.first().owner
    )
    CategoryFactory.create_batch(5)
    with django_assert_num_queries(3):
        dashboard()
    with django_assert_num_queries(4):  # low stock counted live
        dashboard(low_stock_threshold=3)


def test_anonymous_gets_401(api_client):
    assert api_client.get(URL).status_code == 401


def test_non_staff_gets_403(auth_client, user):
    assert auth_client(user).get(URL).status_code == 403


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_representation_equals_the_declared_fields(catalog, settings, zone):
    ProductFactory(category=catalog["tools"], price=Decimal("0.05"), stock=2)
    settings.TIME_ZONE = zone  # DRF shows the current time zone
    with timezone.override(zone):
        figures = dashboard(low_stock_threshold=3)
        declared = serializers.Serializer.to_representation(
            DashboardSerializer(), figures
        )
        built = dashboard_representation(figures)
    assert built == declared
    # Key order too, at every depth: the bytes are the same.
    assert json.dumps(built) == json.dumps(declared)
    assert any(c["average_price"] is None for c in built["categories"])
    assert built["generated_at"].endswith("Z" if zone == "UTC" else ":00")


def test_staff_gets_figures_as_json(auth_client, staff_user, catalog):
    response = auth_client(staff_user).get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["totals"]["products"] == 4
    assert body["totals"]["stock_value"] == "600.00"
    assert len(body["signups_per_day"]) == 30
    assert body["low_stock"]["products"][0]["sku"] == "T-2"


def test_dashboard_is_cached_until_a_write(
    auth_client, staff_user, catalog, django_capture_on_commit_callbacks
):
    client = auth_client(staff_user)
    first = client.get(URL)
    second = client.get(URL)
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert second.content == first.content
    with django_capture_on_commit_callbacks(execute=True):
        ProductFactory(category=catalog["toys"], stock=2)
    third = client.get(URL)
    assert third["X-Cache"] == "MISS"
    assert third.json()["totals"]["products"] == 5


def test_cache_hit_runs_only_the_auth_query(
    auth_client, staff_user, catalog, django_assert_max_num_queries
):
    client = auth_client(staff_user)
    client.get(URL)
    with django_assert_max_num_queries(1):
        response = client.get(URL)
    assert response["X-Cache"] == "HIT"


def test_cached_figures_are_not_served_to_non_staff(auth_client, staff_user, user):
    assert auth_client(staff_user).get(URL).status_code == 200
    assert auth_client(user).get(URL).status_code == 403
