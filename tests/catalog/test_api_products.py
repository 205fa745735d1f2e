import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from catalog import managers
from catalog.api.serializers import (
    ProductSerializer,
    product_representation,
    product_row_representation,
)
from catalog.api.views import ProductViewSet
from catalog.filtersets import MSG_NOT_A_BOOLEAN, ordering_terms
from catalog.models import Category, Product
from catalog.services import product_create, product_update, products_set_active
from catalog.validation import clean_product
from config import counting
from config.api import pagination
from config.api.pagination import PreparedList
from config.cache.namespaces import NAMESPACE_PRODUCTS, bump_namespace
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = reverse("api:product-list")


def detail(product: Product) -> str:
    return reverse("api:product-detail", args=[product.pk])


def payload(category_obj, **overrides) -> dict:
    return {
        "sku": "NEW-001",
        "name": "Walnut desk",
        "description": "A solid walnut desk.",
        "price": "199.90",
        "stock": 3,
        "category": category_obj.pk,
        **overrides,
    }


def ids(response) -> list[int]:
    return [item["id"] for item in response.json()["results"]]


# --- Reading ---------------------------------------------------------------


def test_list_embeds_category_and_owner_without_email(api_client):
    product = ProductFactory(price=Decimal("12.50"))
    item = api_client.get(LIST).json()["results"][0]
    assert item["id"] == product.pk
    assert item["price"] == "12.50"
    assert item["category"] == {
        "id": product.category.pk,
        "name": product.category.name,
        "slug": product.category.slug,
    }
    assert item["owner"] == {"id": product.owner.pk, "username": product.owner.username}
    assert "email" not in str(item)


@pytest.mark.parametrize("size", [1, 100])
def test_list_runs_constant_queries_at_page_size_1_and_100(
    api_client, django_assert_num_queries, size
):
    category = CategoryFactory()
    owners = UserFactory.create_batch(3)
    # One more row than the largest page, so that neither page is the last.
    for i in range(101):
        ProductFactory(category=category, owner=owners[i % 3])
    # Cold: the page's ids with the capped COUNT (one round trip, both on
    # the product table alone), then its products joined to their category
    # and owner by id.
    with django_assert_num_queries(2) as captured:
        response = api_client.get(LIST, {"limit": size})
    assert len(response.json()["results"]) == size
    assert response.json()["count"] == 101
    ids_and_count, rows = (query["sql"] for query in captured.captured_queries)
    page, count = ids_and_count.split("; ")
    assert "JOIN" not in page and "LIMIT" in page and "JOIN" not in count
    assert rows.count("JOIN") == 2 and " IN (" in rows and "LIMIT" not in rows
    # Warm: an insert ahead invalidates the page, not its products' cached
    # fragments: the page costs its ids and count alone.
    bump_namespace(NAMESPACE_PRODUCTS)
    with django_assert_num_queries(1):
        again = api_client.get(LIST, {"limit": size})
    assert (again["X-Cache"], again.content) == ("MISS", response.content)


def test_an_indented_list_reads_its_page_with_a_deferred_join(
    api_client, django_assert_num_queries
):
    ProductFactory.create_batch(3)
    # Rendered by DRF (the fragments are compact JSON): one round trip, the
    # page's rows and the capped COUNT.
    with django_assert_num_queries(1) as captured:
        response = api_client.get(
            LIST, {"limit": 2}, HTTP_ACCEPT="application/json; indent=2"
        )
    assert response.content.startswith(b'{\n  "count": 3')
    page, count = captured.captured_queries[0]["sql"].split("; ")
    # The offset is walked on the product table alone (a deferred join), and
    # the capped COUNT joins nothing either.
    assert page.count("JOIN") == 2 and " IN (SELECT " in page
    assert "JOIN" not in page.split(" IN (SELECT ")[1]
    assert "JOIN" not in count


@pytest.mark.parametrize(
    "ordering", ["price", "-price", "name", "-created_at", "stock"]
)
def test_offset_pages_follow_the_ordering_across_pages(api_client, ordering):
    category = CategoryFactory()
    for i in range(9):
        ProductFactory(category=category, price=Decimal(10 + i % 4), stock=i % 3)
    whole = ids(api_client.get(LIST, {"ordering": ordering, "limit": 100}))
    pages = [
        ids(api_client.get(LIST, {"ordering": ordering, "limit": 4, "offset": offset}))
        for offset in (0, 4, 8)
    ]
    assert [pk for page in pages for pk in page] == whole
    assert len(whole) == 9


LIST_SHAPES = [
    {},
    {"ordering": "price"},
    {"ordering": "-name", "in_stock": "true"},
    {"min_price": "11", "max_price": "12.5"},
    {"in_stock": "false", "ordering": "-created_at"},
    {"category": "SLUG"},
    {"is_active": "false"},
]


@pytest.mark.parametrize("shape", LIST_SHAPES)
@pytest.mark.parametrize("staff", [False, True], ids=["public", "staff"])
def test_prepared_list_pages_match_the_compiled_queryset(
    api_client, auth_client, staff_user, monkeypatch, shape, staff
):
    category = CategoryFactory(slug="tools")
    for i in range(13):
        ProductFactory(
            category=category if i % 2 else CategoryFactory(),
            price=Decimal(10 + i % 4),
            stock=i % 3,
            is_active=i % 5 != 0,
        )
    client = auth_client(staff_user) if staff else api_client
    params = {k: "tools" if v == "SLUG" else v for k, v in shape.items()}

    def pages(tag: str) -> list[dict]:
        # A parameter no filter reads keeps each response out of the cache.
        return [
            client.get(LIST, {**params, "limit": 4, "offset": offset, "n": tag}).json()
            for offset in (0, 4, 8, 12, 40)
        ]

    prepared = pages("prepared")
    again = pages("again")  # from the PreparedList compiled by the first
    monkeypatch.setattr(ProductViewSet, "list_key", lambda self, request: None)
    compiled = pages("compiled")

    def without_links(page: dict) -> dict:
        return {k: v for k, v in page.items() if k not in ("next", "previous")}

    assert [without_links(p) for p in prepared] == [without_links(p) for p in compiled]
    assert [without_links(p) for p in again] == [without_links(p) for p in prepared]
    assert any(p["results"] for p in prepared)


def test_a_list_is_compiled_once_per_filters_and_audience(
    api_client, auth_client, staff_user, monkeypatch, django_assert_num_queries
):
    ProductFactory.create_batch(3)
    compiled = []
    real = PreparedList.compile

    def counting(*args, **kwargs):
        compiled.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(PreparedList, "compile", counting)
    pagination._prepared_lists.clear()
    for offset in (0, 1, 2):
        api_client.get(LIST, {"limit": 1, "offset": offset, "ordering": "price"})
    assert len(compiled) == 1
    # Staff see inactive products: their own SQL.
    auth_client(staff_user).get(LIST, {"limit": 1, "ordering": "price"})
    assert len(compiled) == 2
    # Still the page and the capped COUNT (one round trip), nothing else.
    with django_assert_num_queries(1):
        api_client.get(LIST, {"limit": 2, "offset": 1, "ordering": "price"})


def test_authenticated_list_adds_only_the_user_lookup(
    auth_client, user, django_assert_num_queries
):
    category = CategoryFactory()
    ProductFactory.create_batch(5, category=category)
    client = auth_client(user)
    # The bearer's user, the page's ids with the capped COUNT, its products.
    with django_assert_num_queries(3):
        response = client.get(LIST, {"limit": 100, "category": category.pk})
    assert response.json()["count"] == 5
    assert len(response.json()["results"]) == 5


def test_inactive_products_are_listed_for_staff_only(
    api_client, auth_client, user, staff_user
):
    active = ProductFactory()
    hidden = ProductFactory(is_active=False, owner=user)
    assert ids(api_client.get(LIST)) == [active.pk]
    assert ids(auth_client(user).get(LIST)) == [active.pk]
    assert set(ids(auth_client(staff_user).get(LIST))) == {active.pk, hidden.pk}


def test_is_active_filter_applies_to_staff_and_is_ignored_for_others(
    api_client, auth_client, staff_user
):
    active = ProductFactory()
    hidden = ProductFactory(is_active=False)
    staff = auth_client(staff_user)
    assert ids(staff.get(LIST, {"is_active": "false"})) == [hidden.pk]
    assert ids(staff.get(LIST, {"is_active": "true"})) == [active.pk]
    assert ids(api_client.get(LIST, {"is_active": "false"})) == [active.pk]


def test_inactive_product_detail_is_404_except_for_staff(
    api_client, auth_client, user, staff_user
):
    hidden = ProductFactory(is_active=False, owner=user)
    assert api_client.get(detail(hidden)).status_code == 404
    assert auth_client(user).get(detail(hidden)).status_code == 404
    assert auth_client(staff_user).get(detail(hidden)).status_code == 200


def test_unknown_product_is_404_json(api_client):
    response = api_client.get(reverse("api:product-detail", args=[999999]))
    assert response.status_code == 404
    assert "detail" in response.json()


def test_filter_by_category_id_or_slug(api_client):
    tools, toys = CategoryFactory(slug="tools"), CategoryFactory(slug="toys")
    hammer = ProductFactory(category=tools)
    ProductFactory(category=toys)
    assert ids(api_client.get(LIST, {"category": tools.pk})) == [hammer.pk]
    assert ids(api_client.get(LIST, {"category": "tools"})) == [hammer.pk]
    assert ids(api_client.get(LIST, {"category": "nope"})) == []


def test_filter_by_price_range_is_inclusive(api_client):
    cheap = ProductFactory(price=Decimal("5.00"))
    mid = ProductFactory(price=Decimal("10.00"))
    dear = ProductFactory(price=Decimal("20.00"))
    got = ids(api_client.get(LIST, {"min_price": "10", "ordering": "price"}))
    assert got == [mid.pk, dear.pk]
    got = ids(api_client.get(LIST, {"max_price": "10.00", "ordering": "price"}))
    assert got == [cheap.pk, mid.pk]
    got = ids(api_client.get(LIST, {"min_price": "6", "max_price": "19.99"}))
    assert got == [mid.pk]


def test_bad_filter_value_is_400(api_client):
    response = api_client.get(LIST, {"min_price": "cheap"})
    assert response.status_code == 400
    assert "min_price" in response.json()


def test_filter_in_stock(api_client):
    stocked = ProductFactory(stock=4)
    empty = ProductFactory(out_of_stock=True)
    assert ids(api_client.get(LIST, {"in_stock": "true"})) == [stocked.pk]
    assert ids(api_client.get(LIST, {"in_stock": "false"})) == [empty.pk]
    assert ids(api_client.get(LIST, {"in_stock": "TRUE"})) == [stocked.pk]
    assert ids(api_client.get(LIST, {"in_stock": "0"})) == [empty.pk]


@pytest.mark.parametrize(
    ("param", "value"), [("in_stock", "maybe"), ("in_stock", "yes"), ("is_active", "2")]
)
def test_bad_boolean_filter_is_400_naming_the_parameter(api_client, param, value):
    response = api_client.get(LIST, {param: value})

    assert response.status_code == 400
    assert response.json() == {param: [MSG_NOT_A_BOOLEAN]}


def test_search_matches_name_sku_and_description(api_client):
    by_name = ProductFactory(name="Walnut desk", sku="A-1", description="plain")
    by_sku = ProductFactory(name="Chair", sku="WAL-77", description="plain")
    by_text = ProductFactory(
        name="Table", sku="B-2", description="Made of walnuts from Italy."
    )
    ProductFactory(name="Lamp", sku="C-3", description="Bright light.")
    assert set(ids(api_client.get(LIST, {"search": "walnut"}))) == {
        by_name.pk,
        by_text.pk,
    }
    assert ids(api_client.get(LIST, {"search": "wal-7"})) == [by_sku.pk]
    assert ids(api_client.get(LIST, {"search": "italy"})) == [by_text.pk]


def test_search_is_words_and_a_sku_prefix_not_substrings(api_client):
    desk = ProductFactory(name="Walnut desk", sku="ABC-123", description="Sturdy.")
    chair = ProductFactory(name="Oak chair", sku="XYZ-999", description="Walnut legs.")
    # English stemming: the plural finds the singular, in any case.
    assert set(ids(api_client.get(LIST, {"search": "WALNUTS"}))) == {desk.pk, chair.pk}
    # A SKU matches from its start, in any case; not in its middle.
    assert ids(api_client.get(LIST, {"search": "abc-1"})) == [desk.pk]
    assert ids(api_client.get(LIST, {"search": "123"})) == []
    # Words, not fragments of words.
    assert ids(api_client.get(LIST, {"search": "alnu"})) == []
    # Web-search syntax: words are ANDed, -word excludes, "or" widens, quotes
    # ask for the words side by side.
    assert ids(api_client.get(LIST, {"search": "walnut sturdy"})) == [desk.pk]
    assert ids(api_client.get(LIST, {"search": "walnut -oak"})) == [desk.pk]
    assert set(ids(api_client.get(LIST, {"search": "desk or chair"}))) == {
        desk.pk,
        chair.pk,
    }
    assert ids(api_client.get(LIST, {"search": '"walnut legs"'})) == [chair.pk]
    assert ids(api_client.get(LIST, {"search": '"legs walnut"'})) == []


@pytest.fixture(params=["sorted", "walked"])
def search_plan(request, monkeypatch) -> str:
    """Force each way a search orders its matches (statistics never decide)."""
    monkeypatch.setattr(managers, "SEARCH_WALK_SHARE", 2.0)
    if request.param == "walked":
        monkeypatch.setattr(managers, "SEARCH_SORTED_UP_TO", 0)
    return request.param


def test_search_orders_matches_as_asked_either_way(api_client, search_plan):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    made = [
        ProductFactory(
            name=f"Walnut thing {i}",
            price=Decimal(10 - i),
            created_at=now + timedelta(hours=i),
        )
        for i in range(4)
    ]
    ProductFactory(name="Oak thing", created_at=now + timedelta(days=1))
    newest_first = [p.pk for p in reversed(made)]
    assert ids(api_client.get(LIST, {"search": "walnut"})) == newest_first
    cheapest_first = newest_first
    assert ids(api_client.get(LIST, {"search": "walnut", "ordering": "price"})) == (
        cheapest_first
    )
    page = api_client.get(LIST, {"search": "walnut", "limit": 2}).json()
    assert page["count"] == 4 and ids_of(page) == newest_first[:2]


def test_search_list_runs_constant_queries(
    api_client, django_assert_num_queries, search_plan
):
    ProductFactory.create_batch(3, name="Walnut desk")
    ProductFactory.create_batch(30, name="Walnut chair")
    counting._plan_estimates.clear()
    # Two EXPLAINs (the table's and the search's row estimates, then kept for
    # PLAN_ESTIMATE_SECONDS), the probe counting the matches (up to
    # SEARCH_SORTED_UP_TO), the page joining category and owner, the capped COUNT.
    with django_assert_num_queries(5):
        response = api_client.get(LIST, {"search": "walnut", "limit": 100})
    assert len(response.json()["results"]) == 33


def test_search_walks_when_statistics_call_the_term_common(
    monkeypatch, django_assert_num_queries
):
    ProductFactory.create_batch(3, name="Walnut desk")
    monkeypatch.setattr(managers, "SEARCH_WALK_SHARE", 0.0)
    counting._plan_estimates.clear()
    # Two EXPLAINs (the table's and the search's row estimates), no probe.
    with django_assert_num_queries(2):
        queryset = Product.objects.search("walnut").order_search_by("-created_at")
    assert queryset.query.order_by == ("-created_at",)


@pytest.mark.parametrize("term", ["ab", "-", "a b", "x-1"])
def test_search_without_three_letters_in_a_row_is_400(api_client, term):
    ProductFactory(name="ab x-1")
    response = api_client.get(LIST, {"search": term})
    assert response.status_code == 400
    assert response.json() == {
        "search": ["Search for at least 3 letters or digits in a row."]
    }


def test_search_uses_the_full_text_and_sku_indexes():
    ProductFactory.create_batch(3)
    queryset = Product.objects.search("walnut").values("pk")
    with connection.cursor() as cursor:
        # On a tiny table a sequential scan is cheapest; forbid it (and plain
        # index scans) so the plan shows which indexes can serve the search.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        plan = queryset.explain()
    assert "catalog_product_search" in plan
    assert "catalog_product_sku_upper" in plan
    assert "Seq Scan on catalog_product" not in plan


def test_rare_search_sorts_the_matches_instead_of_walking_an_ordered_index(
    monkeypatch,
):
    ProductFactory.create_batch(3)
    monkeypatch.setattr(managers, "SEARCH_WALK_SHARE", 2.0)
    queryset = (
        Product.objects.for_api()
        .active()
        .search("zebra")
        .order_search_by("-created_at", "-id")[:20]
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.explain()
    assert "Sort Key: ((catalog_product.created_at + " in plan
    assert "Index Scan using catalog_product_active_new" not in plan
    assert "Index Scan using catalog_product_created" not in plan


@pytest.mark.parametrize("ordering", ["", "-price", "name"])
def test_search_results_page_by_cursor_and_offset_alike(
    api_client, ordering, search_plan
):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(7):
        ProductFactory(
            name=f"Walnut thing {i}",
            price=Decimal(i % 3),
            created_at=now + timedelta(hours=i),
        )
    ProductFactory(name="Oak thing")
    params = {"search": "walnut", "ordering": ordering}
    expected = ids(api_client.get(LIST, {**params, "limit": 100}))
    assert len(expected) == 7
    seen: list[int] = []
    page = api_client.get(LIST, {**params, "cursor": "", "limit": 3}).json()
    seen.extend(ids_of(page))
    while page["next"]:
        page = api_client.get(page["next"]).json()
        seen.extend(ids_of(page))
    assert seen == expected


@pytest.mark.parametrize(
    ("ordering", "field", "reverse"),
    [
        ("price", "price", False),
        ("-price", "price", True),
        ("name", "name", False),
        ("-name", "name", True),
        ("created_at", "created_at", False),
        ("-created_at", "created_at", True),
    ],
)
def test_ordering_each_way(api_client, ordering, field, reverse):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for i, (name, price) in enumerate([("b", "3.00"), ("a", "1.00"), ("c", "2.00")]):
        ProductFactory(
            name=name, price=Decimal(price), created_at=now + timedelta(days=i)
        )
    results = api_client.get(LIST, {"ordering": ordering}).json()["results"]
    values = [r[field] for r in results]
    if field == "price":
        values = [Decimal(v) for v in values]
    assert values == sorted(values, reverse=reverse)


def test_unknown_ordering_is_ignored_for_newest_first(api_client):
    old = ProductFactory(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    new = ProductFactory(created_at=datetime(2026, 1, 1, tzinfo=UTC))
    response = api_client.get(LIST, {"ordering": "owner__password"})
    assert response.status_code == 200
    assert ids(response) == [new.pk, old.pk]


def test_a_list_without_filters_is_newest_first_and_id_breaks_ties(api_client):
    same = datetime(2026, 1, 1, tzinfo=UTC)
    old = ProductFactory(created_at=datetime(2025, 1, 1, tzinfo=UTC))
    twins = ProductFactory.create_batch(2, created_at=same)
    ProductFactory(is_active=False)
    expected = [twins[1].pk, twins[0].pk, old.pk]
    assert ids(api_client.get(LIST)) == expected
    assert ids(api_client.get(LIST, {"limit": 2, "offset": 1})) == expected[1:]
    assert ids(api_client.get(LIST, {"ordering": "-created_at"})) == expected


def test_limit_defaults_to_20_and_is_capped_at_100(api_client):
    ProductFactory.create_batch(101)
    page = api_client.get(LIST).json()
    assert len(page["results"]) == 20
    assert page["count"] == 101
    assert "offset=20" in page["next"]
    assert len(api_client.get(LIST, {"limit": 500}).json()["results"]) == 100


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=-3", "limit"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=null&offset=null", "offset"),
        ("offset=1_000", "offset"),
        ("cursor=&limit=", "limit"),
    ],
)
def test_a_limit_or_offset_that_is_not_a_whole_number_is_400(api_client, query, param):
    response = api_client.get(f"{LIST}?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [param]


def test_count_is_exact_up_to_the_cap_then_the_planner_estimate(
    api_client, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(counting, "COUNT_EXACT_UP_TO", 5)
    big, small = CategoryFactory(), CategoryFactory()
    ProductFactory.create_batch(8, category=big)
    ProductFactory.create_batch(3, category=small)
    assert api_client.get(LIST, {"category": small.pk}).json()["count"] == 3
    with django_assert_max_num_queries(3) as captured:
        page = api_client.get(LIST, {"category": big.pk, "limit": 4}).json()
    sql = [q["sql"] for q in captured.captured_queries]
    assert any(s.startswith("EXPLAIN") for s in sql)
    assert all("LIMIT 6" in s for s in sql if s.startswith("SELECT COUNT"))
    assert page["count"] >= 6
    assert len(page["results"]) == 4


def test_next_links_reach_the_last_row_whatever_the_estimate(api_client, monkeypatch):
    monkeypatch.setattr(counting, "COUNT_EXACT_UP_TO", 2)
    # Statistics taken before the category had products make PostgreSQL
    # estimate it holds next to none: the count is then far below the truth,
    # yet next (one row read past the page) still reaches every row.
    category, other = CategoryFactory(), CategoryFactory()
    ProductFactory.create_batch(20, category=other)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
    expected = {p.pk for p in ProductFactory.create_batch(8, category=category)}
    seen: list[int] = []
    page = api_client.get(LIST, {"category": category.pk, "limit": 3}).json()
    assert page["count"] < 8
    while True:
        seen.extend(ids_of(page))
        if not page["next"]:
            break
        page = api_client.get(page["next"]).json()
    assert len(seen) == len(expected)
    assert set(seen) == expected
    assert page["count"] == 8


def test_offsets_beyond_10000_are_400_pointing_to_cursors(api_client):
    ProductFactory()
    assert api_client.get(LIST, {"offset": 10000}).status_code == 200
    response = api_client.get(LIST, {"offset": 10001})
    assert response.status_code == 400
    assert "cursor=" in response.json()["offset"][0]


def test_cursor_pages_have_no_count_and_walk_back(api_client):
    products = ProductFactory.create_batch(5)
    newest_first = sorted(products, key=lambda p: (p.created_at, p.pk), reverse=True)
    first = api_client.get(LIST, {"cursor": "", "limit": 2}).json()
    assert "count" not in first
    assert first["previous"] is None
    assert ids_of(first) == [p.pk for p in newest_first[:2]]
    second = api_client.get(first["next"]).json()
    assert ids_of(second) == [p.pk for p in newest_first[2:4]]
    back = api_client.get(second["previous"]).json()
    assert ids_of(back) == ids_of(first)


def ids_of(page: dict) -> list[int]:
    return [item["id"] for item in page["results"]]


@pytest.mark.parametrize("ordering", ["", "price", "-name"])
def test_cursor_walks_every_row_once_while_rows_are_inserted(api_client, ordering):
    category = CategoryFactory()
    initial = {p.pk for p in ProductFactory.create_batch(12, category=category)}
    seen: list[int] = []
    url = f"{LIST}?cursor=&limit=5&ordering={ordering}"
    while url:
        page = api_client.get(url).json()
        seen.extend(ids_of(page))
        # A newcomer sorts at the head of the default order, anywhere in others.
        ProductFactory(category=category)
        url = page["next"]
    assert len(seen) == len(set(seen))
    assert initial <= set(seen)


def test_tampered_cursor_is_400(api_client):
    ProductFactory()
    response = api_client.get(LIST, {"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_cursor_of_another_ordering_is_400(api_client):
    ProductFactory.create_batch(3)
    page = api_client.get(LIST, {"cursor": "", "limit": 1}).json()
    response = api_client.get(page["next"] + "&ordering=price")
    assert response.status_code == 400


# --- Writing ---------------------------------------------------------------


def test_create_makes_the_caller_owner(auth_client, user):
    category = CategoryFactory()
    response = auth_client(user).post(LIST, payload(category, owner=999), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["owner"] == {"id": user.pk, "username": user.username}
    assert body["slug"] == "walnut-desk"
    assert body["category"]["id"] == category.pk
    assert response["ETag"]
    assert response["Location"].endswith(f"/products/{body['id']}/")
    assert Product.objects.get(pk=body["id"]).owner == user


def test_create_names_the_category_as_it_is_now(
    auth_client, user, staff_user, django_capture_on_commit_callbacks
):
    category = CategoryFactory(name="Desks")
    empty = CategoryFactory()
    client, staff = auth_client(user), auth_client(staff_user)
    first = client.post(LIST, payload(category, sku="C-1"), format="json")
    assert first.json()["category"]["name"] == "Desks"
    assert client.post(LIST, payload(empty, sku="C-2"), format="json").status_code
    Product.objects.filter(sku="C-2").delete()
    with django_capture_on_commit_callbacks(execute=True):
        url = reverse("api:category-detail", args=[category.pk])
        assert staff.patch(url, {"name": "Tables"}).status_code == 200
        url = reverse("api:category-detail", args=[empty.pk])
        assert staff.delete(url).status_code == 204
    renamed = client.post(LIST, payload(category, sku="C-3"), format="json")
    assert renamed.json()["category"]["name"] == "Tables"
    gone = client.post(LIST, payload(empty, sku="C-4"), format="json")
    assert gone.status_code == 400
    assert list(gone.json()) == ["category"]


def test_anonymous_create_is_401(api_client):
    response = api_client.post(LIST, payload(CategoryFactory()), format="json")
    assert response.status_code == 401
    assert not Product.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("price", "-1", "Price must be greater than or equal to 0."),
        ("price", "1.999", "Ensure that there are no more than 2 decimal places."),
        ("price", "10000000000", "Ensure this value is less than or equal to"),
        ("price", "NaN", "A valid number is required."),
        ("stock", -1, "Stock must be greater than or equal to 0."),
        ("stock", 2**31, "Ensure this value is less than or equal to 2147483647."),
        ("stock", 1.5, "A valid integer is required."),
        ("sku", "bad sku!", "SKU must be 1-64 characters"),
        ("sku", "x" * 65, "SKU must be 1-64 characters"),
        ("name", "", "This field may not be blank."),
        ("name", "n" * 201, "Ensure this field has no more than 200 characters."),
        ("category", 999999, 'Invalid pk "999999" - object does not exist.'),
        ("category", "toys", "Incorrect type. Expected pk value, received str."),
    ],
)
def test_create_rejects_values_the_database_would(
    auth_client, user, field, value, message
):
    response = auth_client(user).post(
        LIST, payload(CategoryFactory(), **{field: value}), format="json"
    )
    assert response.status_code == 400
    assert message in response.json()[field][0]
    assert not Product.objects.exists()


def test_create_with_taken_sku_is_400_on_sku(auth_client, user):
    existing = ProductFactory(sku="TAKEN-1")
    response = auth_client(user).post(
        LIST, payload(existing.category, sku="TAKEN-1"), format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"sku": ["product with this SKU already exists."]}
    assert Product.objects.count() == 1


def test_create_without_required_fields_lists_each(auth_client, user):
    response = auth_client(user).post(LIST, {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"sku", "name", "price", "category"}


def test_create_with_non_object_body_is_400(auth_client, user):
    response = auth_client(user).post(LIST, [1, 2], format="json")
    assert response.status_code == 400


@pytest.mark.parametrize("method", ["patch", "put", "delete"])
@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", 401), ("other user", 403), ("owner", 200), ("staff", 200)],
)
def test_write_permission_matrix(api_client, auth_client, user, method, who, expected):
    product = ProductFactory(owner=user, name="Original")
    callers = {
        "other user": lambda: UserFactory(),
        "owner": lambda: user,
        "staff": lambda: UserFactory(staff=True),
    }
    client = api_client if who == "anonymous" else auth_client(callers[who]())
    body = payload(product.category, sku=product.sku, name="Renamed")
    response = getattr(client, method)(detail(product), body, format="json")
    if expected == 200 and method == "delete":
        expected = 204
    assert response.status_code == expected, response.content
    unchanged = Product.objects.filter(pk=product.pk, name="Original").exists()
    assert unchanged == (expected >= 400)


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_an_owner_write_reads_only_the_locked_product_row(auth_client, user, method):
    product = ProductFactory(owner=user)
    client = auth_client(user)
    # The caller and the category are kept by this process after one write.
    assert client.patch(detail(product), {"stock": 2}, format="json").status_code == 200

    with CaptureQueriesContext(connection) as captured:
        response = getattr(client, method)(detail(product), {"stock": 3}, format="json")

    assert response.status_code in (200, 204), response.content
    reads = [q["sql"] for q in captured if q["sql"].startswith("SELECT")]
    # The caller's probe (writes load it from PostgreSQL), then the product.
    assert len(reads) == 2 and '"accounts_user"' in reads[0]
    reads = reads[1:]
    assert reads[0].endswith("FOR UPDATE")
    assert "JOIN" not in reads[0]
    if method == "patch":
        body = response.json()
        assert body["owner"] == {"id": user.pk, "username": user.username}
        assert body["category"]["slug"] == product.category.slug


def test_a_staff_write_shows_the_owner_it_did_not_sign_in_as(auth_client, user):
    product = ProductFactory(owner=user)
    response = auth_client(UserFactory(staff=True)).patch(
        detail(product), {"stock": 3}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["owner"] == {"id": user.pk, "username": user.username}


def test_patch_writes_only_sent_fields_and_returns_new_etag(
    auth_client, user, django_capture_on_commit_callbacks
):
    product = ProductFactory(owner=user, price=Decimal("5.00"), stock=1)
    client = auth_client(user)
    etag = client.get(detail(product))["ETag"]
    # Run the after-commit cache invalidation, as a real commit would.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.patch(detail(product), {"stock": 7}, format="json")
    assert response.status_code == 200
    assert response.json()["stock"] == 7
    assert response.json()["price"] == "5.00"
    assert response["ETag"] != etag
    assert client.get(detail(product))["ETag"] == response["ETag"]


def test_put_requires_the_whole_product(auth_client, user):
    product = ProductFactory(owner=user)
    response = auth_client(user).put(detail(product), {"stock": 7}, format="json")
    assert response.status_code == 400
    assert "sku" in response.json()


def test_patch_to_a_taken_sku_is_400(auth_client, user):
    ProductFactory(sku="TAKEN-2")
    product = ProductFactory(owner=user, sku="MINE-1")
    response = auth_client(user).patch(
        detail(product), {"sku": "TAKEN-2"}, format="json"
    )
    assert response.status_code == 400
    assert "sku" in response.json()
    product.refresh_from_db()
    assert product.sku == "MINE-1"


# --- ETag / If-Match -------------------------------------------------------


def test_detail_etag_is_strong_and_if_none_match_gives_304(api_client):
    product = ProductFactory()
    response = api_client.get(detail(product))
    etag = response["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = api_client.get(detail(product), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304


def test_304_describes_no_body_and_keeps_the_validators(api_client):
    product = ProductFactory()
    full = api_client.get(detail(product))
    cache.clear()
    # Rendered by the view (a miss; a 304 is not stored) ...
    rendered = api_client.get(detail(product), HTTP_IF_NONE_MATCH=full["ETag"])
    api_client.get(detail(product))
    # ... and answered from the stored 200 (a hit).
    replayed = api_client.get(detail(product), HTTP_IF_NONE_MATCH=full["ETag"])

    for response, source in ((rendered, "MISS"), (replayed, "HIT")):
        assert (response.status_code, response["X-Cache"]) == (304, source)
        assert response.content == b""
        assert "Content-Type" not in response, source
        for name in ("ETag", "Vary", "Cache-Control"):
            assert response.get(name) == full.get(name), (source, name)


def test_weak_if_match_never_matches(auth_client, user):
    product = ProductFactory(owner=user, name="Original")
    client = auth_client(user)
    etag = client.get(detail(product))["ETag"]
    response = client.patch(
        detail(product), {"name": "X"}, format="json", HTTP_IF_MATCH=f"W/{etag}"
    )
    assert response.status_code == 412
    response = client.patch(
        detail(product), {"name": "Y"}, format="json", HTTP_IF_MATCH=f'"x", {etag}'
    )
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["patch", "put", "delete"])
def test_write_with_fresh_if_match_succeeds(auth_client, user, method):
    product = ProductFactory(owner=user)
    client = auth_client(user)
    etag = client.get(detail(product))["ETag"]
    body = payload(product.category, sku=product.sku, name="Fresh")
    response = getattr(client, method)(
        detail(product), body, format="json", HTTP_IF_MATCH=etag
    )
    assert response.status_code in (200, 204), response.content


@pytest.mark.parametrize("method", ["patch", "put", "delete"])
def test_write_with_stale_if_match_is_412_and_changes_nothing(
    auth_client, user, method
):
    product = ProductFactory(owner=user, name="Original")
    client = auth_client(user)
    stale = client.get(detail(product))["ETag"]
    client.patch(detail(product), {"stock": product.stock + 1}, format="json")
    body = payload(product.category, sku=product.sku, name="Overwritten")
    response = getattr(client, method)(
        detail(product), body, format="json", HTTP_IF_MATCH=stale
    )
    assert response.status_code == 412
    assert "detail" in response.json()
    product.refresh_from_db()
    assert product.name == "Original"


def test_write_without_if_match_is_allowed(auth_client, user):
    product = ProductFactory(owner=user)
    response = auth_client(user).patch(detail(product), {"name": "Nx"}, format="json")
    assert response.status_code == 200


def test_etag_changes_when_an_admin_action_deactivates(
    auth_client, staff_user, django_capture_on_commit_callbacks
):
    product = ProductFactory()
    client = auth_client(staff_user)
    etag = client.get(detail(product))["ETag"]
    with django_capture_on_commit_callbacks(execute=True):
        products_set_active(
            products=Product.objects.filter(pk=product.pk), active=False
        )
    assert client.get(detail(product))["ETag"] != etag


def patch_concurrently(clients, url: str, bodies: list[dict], **headers) -> list[int]:
    """PATCH *url* with each body from its own thread (and connection) at once."""
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = []

    def patch(client, body):
        try:
            barrier.wait()
            response = client.patch(url, body, format="json", **headers)
            statuses.append(response.status_code)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=patch, args=pair)
        for pair in zip(clients, bodies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


@pytest.mark.django_db(transaction=True)
def test_concurrent_patches_of_different_fields_both_land(auth_client, user):
    product = ProductFactory(owner=user, price=Decimal("1.00"), stock=1)
    clients = [auth_client(user), auth_client(user)]
    statuses = patch_concurrently(
        clients, detail(product), [{"price": "9.99"}, {"stock": 42}]
    )
    assert statuses == [200, 200]
    product.refresh_from_db()
    assert (product.price, product.stock) == (Decimal("9.99"), 42)


@pytest.mark.django_db(transaction=True)
def test_concurrent_patches_with_the_same_if_match_let_exactly_one_win(
    auth_client, user
):
    product = ProductFactory(owner=user, name="Original")
    clients = [auth_client(user), auth_client(user)]
    etag = clients[0].get(detail(product))["ETag"]
    statuses = patch_concurrently(
        clients,
        detail(product),
        [{"name": "First"}, {"name": "Second"}],
        HTTP_IF_MATCH=etag,
    )
    assert statuses == [200, 412]
    product.refresh_from_db()
    assert product.name in {"First", "Second"}


@pytest.mark.parametrize(
    "in_transaction",
    [
        pytest.param(True, id="savepoint"),
        pytest.param(
            False, id="autocommit", marks=pytest.mark.django_db(transaction=True)
        ),
    ],
)
def test_a_category_deleted_under_a_write_is_a_field_error_not_a_500(
    user, in_transaction
):
    assert connection.in_atomic_block == in_transaction
    taken = ProductFactory(owner=user, sku="TAKEN-1")
    with pytest.raises(ValidationError) as duplicate:
        product_create(
            owner=user, category=taken.category, sku="TAKEN-1", name="X", price=1
        )
    assert "sku" in duplicate.value.message_dict
    category = CategoryFactory()
    product = ProductFactory(owner=user)
    # The category goes between the request's check and its INSERT/UPDATE;
    # the deferred foreign key would only have failed at COMMIT.
    Category.objects.filter(pk=category.pk).delete()
    with pytest.raises(ValidationError) as created:
        product_create(
            owner=user, category=category, sku="LATE-1", name="Late", price=1
        )
    assert "category" in created.value.message_dict
    with pytest.raises(ValidationError) as updated:
        product_update(product=product, category=category)
    assert "category" in updated.value.message_dict


@pytest.mark.parametrize("price", ["0", "3", "10.5", "1234.56", "99999999.99"])
def test_product_representation_equals_the_declared_fields(price, settings):
    product = ProductFactory(price=Decimal(price), description="Ünïcode <b>")
    stored = Product.objects.for_api().get(pk=product.pk)
    unsaved = Product(  # as a create answers it: the price as the client sent it
        pk=1, sku="A", name="N", slug="n", price=Decimal(price), stock=2,
        category=product.category, owner=product.owner,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC),
        updated_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )  # fmt: skip
    for instance in (product, stored, unsaved):
        declared = serializers.ModelSerializer.to_representation(
            ProductSerializer(), instance
        )
        assert product_representation(instance) == declared
        assert list(product_representation(instance)) == list(declared)
    row = Product.objects.api_row(product.pk, active_only=True)
    assert product_row_representation(row) == product_representation(stored)
    settings.TIME_ZONE = "Europe/Paris"  # DRF shows the current time zone
    with timezone.override("Europe/Paris"):
        declared = serializers.ModelSerializer.to_representation(
            ProductSerializer(), stored
        )
        assert product_representation(stored) == declared


def test_detail_reads_one_row_in_one_query(
    api_client, auth_client, staff_user, django_assert_num_queries
):
    hidden = ProductFactory(is_active=False)
    shown = ProductFactory()
    staff = auth_client(staff_user)
    staff.get(detail(shown))  # the signed-in user is loaded once, then kept
    for client, product, status in [
        (api_client, shown, 200),
        (api_client, hidden, 404),
        (staff, hidden, 200),
    ]:
        with django_assert_num_queries(1):
            response = client.get(detail(product))
        assert response.status_code == status
        if status == 200:
            assert response.json()["id"] == product.pk


@pytest.mark.parametrize(
    "pk", ["abc", "1e3", "99999999999999999999", "-1", "0", "²", "¹²", "①", "١٢"]
)
def test_detail_of_an_id_that_cannot_exist_is_404(api_client, pk):
    response = api_client.get(f"{LIST}{quote(pk)}/")
    assert response.status_code == 404
    assert "detail" in response.json()


# --- Shared validation (the import command runs the same code) --------------


def test_clean_product_accepts_csv_strings():
    cleaned, errors = clean_product(
        {
            "sku": " A-1 ",
            "name": "Oak Chair",
            "price": "19.90",
            "stock": "",
            "is_active": "no",
            "category": "3",
        }
    )
    assert errors == {}
    assert cleaned == {
        "sku": "A-1",
        "name": "Oak Chair",
        "slug": "oak-chair",
        "description": "",
        "price": Decimal("19.90"),
        "stock": 0,
        "is_active": False,
        "category_id": 3,
    }


def test_clean_product_partial_checks_only_sent_keys():
    assert clean_product({"stock": "5"}, partial=True) == ({"stock": 5}, {})
    assert clean_product({"price": None}, partial=True)[1] == {
        "price": ["This field may not be null."]
    }


# --- OpenAPI -----------------------------------------------------------------


def test_schema_is_warning_free_and_documents_bulk_and_if_match(tmp_path):
    out = tmp_path / "schema.json"
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--format",
        "openapi-json",
        "--file",
        str(out),
    )
    paths = json.loads(out.read_text())["paths"]
    prefix = reverse("api:product-list").removesuffix("products/")
    assert {"post", "patch", "delete"} <= set(paths[f"{prefix}products/bulk/"])
    detail_ops = paths[f"{prefix}products/{{id}}/"]
    for method in ("put", "patch", "delete"):
        names = [p["name"] for p in detail_ops[method]["parameters"]]
        assert "If-Match" in names
        assert "412" in detail_ops[method]["responses"]
    list_params = {p["name"] for p in paths[f"{prefix}products/"]["get"]["parameters"]}
    assert {"category", "min_price", "max_price", "in_stock", "search"} <= list_params
    assert {"ordering", "limit", "offset", "cursor"} <= list_params


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 3},
        {"limit": 2, "offset": 2, "ordering": "price"},
        {"limit": 100, "ordering": "-name"},
        {"offset": 50},
    ],
    ids=["first", "ordered", "all", "past-the-end"],
)
def test_a_page_of_cached_fragments_is_what_the_serializer_renders(
    api_client, auth_client, staff_user, params
):
    owner = UserFactory(username="Zoë")
    category = CategoryFactory(name="Lamps & \u2028 things")
    for i, price in enumerate(["9.90", "120.00", "0.50", "33.33", "7.00"]):
        ProductFactory(
            owner=owner,
            category=category,
            name=f'Lamp {i} \u2603 "quoted"',
            description="line\nbreak\u2029 <b>",
            price=Decimal(price),
            is_active=i != 3,
        )
    ordering = ordering_terms(params.get("ordering"))
    for client, user in ((api_client, None), (auth_client(staff_user), staff_user)):
        for _ in range(2):  # fragments rendered, then read back from the cache
            bump_namespace(NAMESPACE_PRODUCTS)
            response = client.get(LIST, params)
            assert (response.status_code, response["X-Cache"]) == (200, "MISS")
            assert response["Content-Type"] == "application/json"
            page = response.json()
            visible = Product.objects.for_api().visible_to(user or AnonymousUser())
            expected = list(visible.order_by(*ordering))
            offset, limit = params.get("offset", 0), params.get("limit", 20)
            shown = expected[offset : offset + limit]
            assert [p["id"] for p in page["results"]] == [p.pk for p in shown]
            body = JSONRenderer().render(
                {
                    "count": len(expected),
                    "next": page["next"],
                    "previous": page["previous"],
                    "results": ProductSerializer(shown, many=True).data,
                }
            )
            assert response.content == body
        # The same headers as a page DRF renders itself.
        drf = client.get(LIST, params, HTTP_ACCEPT="application/json; indent=2")
        assert drf.json() == page
        for header in ("Allow", "Vary", "Content-Language", "ETag"):
            assert response.get(header) == drf.get(header)
