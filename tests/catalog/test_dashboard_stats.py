"""The dashboard's precomputed figures stay exact through every write path."""

import datetime
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, DecimalField, F, Q, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from catalog.models import CategoryStats, DayStats, Product
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("api:analytics-dashboard")
PRODUCTS = reverse("api:product-list")
BULK = reverse("api:product-bulk")
CENT = Decimal("0.01")
# catalog.analytics.LOW_STOCK_THRESHOLD, the threshold the triggers count at.
LOW = 5


def money(value: Decimal | None) -> str:
    return str((value or Decimal(0)).quantize(CENT, rounding=ROUND_HALF_UP))


def per_day(queryset, start: datetime.date) -> dict[str, int]:
    rows = (
        queryset.order_by()
        .filter(
            created_at__gte=datetime.datetime.combine(
                start, datetime.time.min, tzinfo=datetime.UTC
            )
        )
        .annotate(day=TruncDate("created_at", tzinfo=datetime.UTC))
        .values("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    return {day.isoformat(): n for day, n in rows}


def expected() -> dict:
    """Return the dashboard's figures aggregated straight from the tables."""
    rows = (
        Product.objects.order_by()
        .values("category__slug")
        .annotate(
            products=Count("pk"),
            active=Count("pk", filter=Q(is_active=True)),
            low=Count("pk", filter=Q(is_active=True, stock__lte=LOW)),
            price_total=Sum("price"),
            value=Sum(
                F("price") * F("stock"),
                output_field=DecimalField(max_digits=30, decimal_places=2),
            ),
            units=Sum("stock"),
        )
    )
    categories = {
        row["category__slug"]: (
            row["products"],
            row["active"],
            row["low"],
            money(row["price_total"] / row["products"]),
            money(row["value"]),
            row["units"],
        )
        for row in rows
    }
    start = timezone.now().astimezone(datetime.UTC).date() - datetime.timedelta(29)
    users = User.objects.aggregate(
        total=Count("pk"), active=Count("pk", filter=Q(is_active=True))
    )
    return {
        "categories": categories,
        "users": (users["total"], users["active"]),
        "signups": per_day(User.objects, start),
        "new_products": per_day(Product.objects, start),
    }


def shown(client) -> dict:
    """Return the dashboard API's figures in the shape of expected()."""
    body = client.get(DASHBOARD).json()
    categories = {
        c["slug"]: (
            c["products"],
            c["active_products"],
            c["low_stock_products"],
            c["average_price"],
            c["stock_value"],
            c["stock_units"],
        )
        for c in body["categories"]
        if c["products"]
    }
    totals = body["totals"]
    products = Product.objects.count()
    assert totals["products"] == products
    assert totals["stock_units"] == sum(c[5] for c in categories.values())
    assert totals["low_stock_products"] == sum(c[2] for c in categories.values())
    if products:
        price_sum = Product.objects.aggregate(s=Sum("price"))["s"]
        assert totals["average_price"] == money(price_sum / products)
    return {
        "categories": categories,
        "users": (totals["users"], totals["active_users"]),
        "signups": {
            d["date"]: d["count"] for d in body["signups_per_day"] if d["count"]
        },
        "new_products": {
            d["date"]: d["count"] for d in body["products_per_day"] if d["count"]
        },
    }


@pytest.fixture
def staff(auth_client, staff_user):
    return auth_client(staff_user)


def assert_exact(client) -> None:
    # The cache is bumped on commit; tests run inside one transaction.
    from config.cache.namespaces import bump_namespace

    for namespace in ("products", "users", "categories"):
        bump_namespace(namespace)
    assert shown(client) == expected()


def test_api_single_and_bulk_writes_keep_the_figures_exact(staff):
    tools, toys = CategoryFactory(slug="tools"), CategoryFactory(slug="toys")
    ProductFactory.create_batch(3, category=tools, stock=2)
    assert_exact(staff)

    created = staff.post(
        PRODUCTS,
        {
            "sku": "API-1",
            "name": "Saw",
            "price": "12.30",
            "stock": 4,
            "category": tools.pk,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    pk = created.json()["id"]
    detail = reverse("api:product-detail", args=[pk])
    assert (
        staff.patch(
            detail, {"price": "7.77", "stock": 40, "category": toys.pk}, format="json"
        ).status_code
        == 200
    )
    assert staff.patch(detail, {"is_active": False}, format="json").status_code == 200
    assert_exact(staff)

    items = [
        {
            "sku": f"B-{n}",
            "name": f"Item {n}",
            "price": f"{n}.25",
            "stock": n,
            "category": (tools if n % 2 else toys).pk,
        }
        for n in range(10)
    ]
    response = staff.post(BULK, items, format="json")
    assert response.status_code == 201, response.content
    ids = response.json()["ids"]
    changes = [
        {"id": ids[0], "stock": 0, "category": tools.pk},
        {"id": ids[1], "price": "999.99", "is_active": False},
        {"id": ids[2], "name": "Renamed only"},
    ]
    assert staff.patch(BULK, changes, format="json").status_code == 200
    assert_exact(staff)

    assert staff.delete(BULK, {"ids": ids[3:6]}, format="json").status_code == 200
    assert staff.delete(detail).status_code == 204
    assert_exact(staff)


def test_admin_import_seed_raw_sql_and_users_keep_the_figures_exact(
    staff, admin_client, tmp_path: Path
):
    tools = CategoryFactory(slug="tools")
    owner = UserFactory(created_at=timezone.now() - datetime.timedelta(days=3))
    response = admin_client.post(
        reverse("admin:catalog_product_add"),
        {
            "sku": "ADM-1",
            "name": "Vice",
            "slug": "vice",
            "description": "",
            "price": "30.00",
            "stock": "2",
            "is_active": "on",
            "category": tools.pk,
            "owner": owner.pk,
        },
    )
    assert response.status_code == 302, response.content
    product = Product.objects.get(sku="ADM-1")
    admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {"action": "deactivate_products", "_selected_action": [product.pk]},
    )
    assert_exact(staff)

    csv_path = tmp_path / "products.csv"
    csv_path.write_text(
        "sku,name,price,category,owner,stock,description,is_active\n"
        f"IMP-1,Lamp,19.90,lighting,{owner.email},4,Warm,true\n"
        f"IMP-2,Desk,120,furniture,{owner.email},0,,false\n"
        f"ADM-1,Vice,31.00,lighting,{owner.email},9,,true\n",
        encoding="utf-8",
    )
    call_command(
        "import_products", str(csv_path), "--create-categories", stdout=StringIO()
    )
    call_command(
        "seed_demo", users=5, products=60, categories=3, seed=4, stdout=StringIO()
    )
    assert_exact(staff)

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE catalog_product SET stock = stock + 3, price = price * 2"
            " WHERE sku LIKE 'DEMO-%%' AND stock < 20"
        )
        cursor.execute("DELETE FROM catalog_product WHERE sku LIKE 'DEMO-00000_'")
    user = UserFactory()
    assert staff.delete(reverse("api:user-detail", args=[user.pk])).status_code == 204
    User.objects.filter(email__startswith="demo00000").update(is_active=False)
    assert_exact(staff)


def test_deleting_an_emptied_category_and_users_keeps_the_figures_exact(staff):
    doomed, kept = CategoryFactory(slug="doomed"), CategoryFactory(slug="kept")
    products = ProductFactory.create_batch(3, category=doomed)
    ProductFactory(category=kept)
    ids = [p.pk for p in products]
    assert staff.delete(BULK, {"ids": ids}, format="json").status_code == 200
    detail = reverse("api:category-detail", args=[doomed.pk])
    assert staff.delete(detail).status_code == 204
    User.objects.filter(pk__in=[UserFactory().pk, UserFactory().pk]).delete()

    assert_exact(staff)


def test_other_low_stock_thresholds_are_counted_live(staff):
    from catalog.analytics import dashboard

    tools = CategoryFactory(slug="tools")
    ProductFactory(category=tools, stock=2)
    ProductFactory(category=tools, stock=4)
    ProductFactory(category=tools, stock=4, is_active=False)

    figures = dashboard(low_stock_threshold=3)

    assert figures["totals"]["low_stock_products"] == 1
    assert dashboard()["totals"]["low_stock_products"] == 2


def test_truncate_empties_the_figures(staff):
    ProductFactory.create_batch(3)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks
        cursor.execute("TRUNCATE catalog_product")

    assert not CategoryStats.objects.exists()
    assert not DayStats.objects.filter(subject="products").exists()
    assert_exact(staff)


@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_in_one_category_neither_wait_nor_fail(
    auth_client, staff_user, dsn
):
    """API creates from threads, then 2,400 raw statements that cross foldings."""
    tools, toys = CategoryFactory(slug="tools"), CategoryFactory(slug="toys")
    owner = UserFactory()
    client = auth_client(staff_user)

    def create(worker: int) -> list[int]:
        try:
            api = auth_client(staff_user)
            return [
                api.post(
                    PRODUCTS,
                    {
                        "sku": f"C-{worker}-{n}",
                        "name": "Same category",
                        "price": "1.50",
                        "stock": n,
                        "category": tools.pk,
                    },
                    format="json",
                ).status_code
                for n in range(10)
            ]
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for batch in pool.map(create, range(4)) for s in batch]
    assert statuses == [201] * 40

    # Each thread: single-row inserts in one category (autocommit), and
    # transactions that update both categories in opposite orders.
    start = threading.Barrier(4)

    def hammer(worker: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            start.wait()
            for n in range(500):
                conn.execute(
                    "INSERT INTO catalog_product (sku, name, slug, description,"
                    " price, stock, is_active, category_id, owner_id, created_at,"
                    " updated_at) VALUES (%s, 'x', '', '', 2.5, %s, true, %s, %s,"
                    " now(), now())",
                    [f"H-{worker}-{n}", n % 9, tools.pk, owner.pk],
                )
            first, second = (tools, toys) if worker % 2 else (toys, tools)
            for n in range(50):
                with conn.transaction():
                    for category in (first, second):
                        conn.execute(
                            "UPDATE catalog_product SET stock = stock + 1"
                            " WHERE sku = %s",
                            [f"H-{worker}-{n if category is tools else n + 1}"],
                        )
                        conn.execute(
                            "UPDATE catalog_product SET category_id = %s"
                            " WHERE sku = %s",
                            [category.pk, f"H-{worker}-{n + 100}"],
                        )

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(hammer, range(4)))

    assert Product.objects.count() == 40 + 2000
    # Folded as it went: far fewer rows than the 2,400+ statements wrote.
    assert CategoryStats.objects.count() < 1100
    assert_exact(client)
