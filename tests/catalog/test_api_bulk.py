from decimal import Decimal

import pytest
from django.urls import reverse

from catalog.models import Product
from tests.factories import CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db

BULK = reverse("api:product-bulk")


def item(category, n: int, **overrides) -> dict:
    return {
        "sku": f"BULK-{n:04d}",
        "name": f"Bulk item {n}",
        "price": "9.99",
        "stock": n,
        "category": category.pk,
        **overrides,
    }


def snapshot() -> list[tuple]:
    return list(
        Product.objects.order_by("pk").values_list(
            "pk", "sku", "name", "price", "stock", "is_active", "category_id"
        )
    )


@pytest.fixture
def staff(auth_client, staff_user):
    return auth_client(staff_user)


# --- Permissions -------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "patch", "delete"])
def test_bulk_is_staff_only(api_client, auth_client, user, method):
    product = ProductFactory(owner=user)
    body = (
        {"ids": [product.pk]}
        if method == "delete"
        else [{"id": product.pk, "name": "x", **item(product.category, 1)}]
    )
    before = snapshot()
    assert getattr(api_client, method)(BULK, body, format="json").status_code == 401
    response = getattr(auth_client(user), method)(BULK, body, format="json")
    assert response.status_code == 403
    assert snapshot() == before


# --- Create --------------------------------------------------------------------


def test_bulk_create_inserts_every_item_in_one_statement(
    staff, staff_user, django_assert_max_num_queries
):
    category = CategoryFactory()
    items = [item(category, n) for n in range(50)]
    # User lookup, category check, SKU check, savepoints and the one INSERT.
    with django_assert_max_num_queries(8) as captured:
        response = staff.post(BULK, items, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] == 50
    inserts = [q for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    products = Product.objects.in_bulk(body["ids"])
    assert [products[pk].sku for pk in body["ids"]] == [i["sku"] for i in items]
    assert all(p.owner_id == staff_user.pk for p in products.values())
    assert products[body["ids"][0]].slug == "bulk-item-0"


def test_bulk_create_with_one_bad_item_writes_nothing(staff):
    category = CategoryFactory()
    items = [item(category, n) for n in range(5)]
    items[1]["price"] = "-3"
    items[3]["stock"] = "many"
    response = staff.post(BULK, items, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["errors"] == [
        {
            "index": 1,
            "errors": {"price": ["Price must be greater than or equal to 0."]},
        },
        {"index": 3, "errors": {"stock": ["A valid integer is required."]}},
    ]
    assert "nothing was written" in body["detail"]
    assert not Product.objects.exists()


def test_bulk_create_rejects_a_sku_repeated_in_the_payload(staff):
    category = CategoryFactory()
    items = [item(category, 1), item(category, 2), item(category, 1)]
    response = staff.post(BULK, items, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 2, "errors": {"sku": ["Repeats the SKU of item 0."]}}
    ]
    assert not Product.objects.exists()


def test_bulk_create_rejects_taken_skus_and_unknown_categories(staff):
    existing = ProductFactory(sku="BULK-0001")
    before = snapshot()
    items = [item(existing.category, 0), item(existing.category, 1)]
    items[0]["category"] = 999999
    response = staff.post(BULK, items, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "index": 0,
            "errors": {"category": ['Invalid pk "999999" - object does not exist.']},
        },
        {"index": 1, "errors": {"sku": ["product with this SKU already exists."]}},
    ]
    assert snapshot() == before


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "NOT-A-LIST"},
        "text",
        None,
        [],
        [["nested"]],
    ],
)
def test_bulk_create_with_a_bad_envelope_is_400(staff, body):
    response = staff.post(BULK, body, format="json")
    assert response.status_code == 400
    assert response.json()
    assert not Product.objects.exists()


def test_bulk_create_over_1000_items_is_400(staff):
    category = CategoryFactory()
    items = [item(category, n) for n in range(1001)]
    response = staff.post(BULK, items, format="json")
    assert response.status_code == 400
    assert "at most 1000" in response.json()["detail"]
    assert not Product.objects.exists()


def test_bulk_create_of_exactly_1000_items_succeeds(staff):
    category = CategoryFactory()
    response = staff.post(BULK, [item(category, n) for n in range(1000)], format="json")
    assert response.status_code == 201
    assert Product.objects.count() == 1000


# --- Update --------------------------------------------------------------------


def test_bulk_update_writes_only_the_fields_each_item_sends(
    staff, django_assert_max_num_queries
):
    a = ProductFactory(price=Decimal("1.00"), stock=1, name="A")
    b = ProductFactory(price=Decimal("2.00"), stock=2, name="B")
    other = CategoryFactory()
    body = [
        {"id": a.pk, "price": "10.50"},
        {"id": b.pk, "stock": 20, "category": other.pk, "is_active": False},
    ]
    with django_assert_max_num_queries(9) as captured:
        response = staff.patch(BULK, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"updated": 2}
    updates = [q for q in captured.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.price, a.stock, a.name) == (Decimal("10.50"), 1, "A")
    assert (b.price, b.stock, b.name, b.category_id, b.is_active) == (
        Decimal("2.00"),
        20,
        "B",
        other.pk,
        False,
    )


def test_bulk_update_bumps_updated_at(staff):
    product = ProductFactory()
    before = product.updated_at
    staff.patch(BULK, [{"id": product.pk, "stock": 5}], format="json")
    product.refresh_from_db()
    assert product.updated_at > before


def test_bulk_update_with_an_unknown_id_writes_nothing(staff):
    product = ProductFactory(stock=1)
    before = snapshot()
    body = [{"id": product.pk, "stock": 9}, {"id": 999999, "stock": 9}]
    response = staff.patch(BULK, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 1, "errors": {"id": ["No product with id 999999."]}}
    ]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"stock": -1}, "stock"),
        ({"price": "0.001"}, "price"),
        ({"sku": "has space"}, "sku"),
        ({"category": 999999}, "category"),
        ({"name": ""}, "name"),
        ({}, "non_field_errors"),
    ],
)
def test_bulk_update_with_one_invalid_item_writes_nothing(staff, bad, field):
    a, b = ProductFactory(), ProductFactory()
    before = snapshot()
    body = [{"id": a.pk, "stock": 77}, {"id": b.pk, **bad}]
    response = staff.patch(BULK, body, format="json")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["index"] == 1
    assert field in error["errors"]
    assert snapshot() == before


def test_bulk_update_rejects_repeated_ids_and_missing_ids(staff):
    product = ProductFactory()
    before = snapshot()
    body = [
        {"id": product.pk, "stock": 1},
        {"stock": 2},
        {"id": product.pk, "stock": 3},
    ]
    response = staff.patch(BULK, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 1, "errors": {"id": ["This field is required."]}},
        {"index": 2, "errors": {"id": ["Repeats the id of item 0."]}},
    ]
    assert snapshot() == before


def test_bulk_update_to_a_sku_of_another_product_is_rejected(staff):
    a = ProductFactory(sku="KEEP-A")
    b = ProductFactory(sku="KEEP-B")
    before = snapshot()
    response = staff.patch(BULK, [{"id": b.pk, "sku": "KEEP-A"}], format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["errors"] == {
        "sku": ["product with this SKU already exists."]
    }
    assert snapshot() == before
    # Re-sending a product's own SKU is not a conflict.
    response = staff.patch(BULK, [{"id": a.pk, "sku": "KEEP-A"}], format="json")
    assert response.status_code == 200


def test_bulk_update_over_1000_items_or_non_list_is_400(staff):
    product = ProductFactory()
    before = snapshot()
    body = [{"id": product.pk, "stock": n} for n in range(1001)]
    assert staff.patch(BULK, body, format="json").status_code == 400
    body = {"id": product.pk, "stock": 3}
    assert staff.patch(BULK, body, format="json").status_code == 400
    assert snapshot() == before


# --- Delete --------------------------------------------------------------------


def test_bulk_delete_removes_the_given_ids_in_one_statement(
    staff, django_assert_max_num_queries
):
    doomed = ProductFactory.create_batch(3)
    kept = ProductFactory()
    with django_assert_max_num_queries(7) as captured:
        response = staff.delete(BULK, {"ids": [p.pk for p in doomed]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"deleted": 3}
    deletes = [q for q in captured.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 1
    assert list(Product.objects.values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.parametrize(
    ("ids", "index", "message"),
    [
        (["first", 999999], 1, "No product with id 999999."),
        (["first", "abc"], 1, "Incorrect type. Expected pk value, received str."),
        (["first", "first"], 1, "Repeats the id of item 0."),
    ],
)
def test_bulk_delete_with_a_bad_id_deletes_nothing(staff, ids, index, message):
    product = ProductFactory()
    ids = [product.pk if value == "first" else value for value in ids]
    response = staff.delete(BULK, {"ids": ids}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"index": index, "errors": {"id": [message]}}]
    assert Product.objects.filter(pk=product.pk).exists()


@pytest.mark.parametrize(
    "body",
    [
        None,
        [1, 2],
        {"ids": "1,2"},
        {"ids": []},
        {"pks": [1]},
        {"ids": list(range(1, 1002))},
    ],
)
def test_bulk_delete_with_a_bad_envelope_is_400(staff, body):
    product = ProductFactory()
    response = staff.delete(BULK, body, format="json")
    assert response.status_code == 400
    assert "detail" in response.json()  # the BulkError shape the schema declares
    assert Product.objects.filter(pk=product.pk).exists()


# --- Cache freshness -------------------------------------------------------------


def test_every_bulk_write_is_seen_by_the_next_cached_read(
    staff, api_client, django_capture_on_commit_callbacks
):
    category = CategoryFactory()
    url = reverse("api:product-list")

    def listed() -> dict[int, int]:
        response = api_client.get(url, {"limit": 100})
        return {p["id"]: p["stock"] for p in response.json()["results"]}

    assert listed() == {}
    assert api_client.get(url, {"limit": 100})["X-Cache"] == "HIT"
    with django_capture_on_commit_callbacks(execute=True):
        ids = staff.post(BULK, [item(category, 1)], format="json").json()["ids"]
    assert listed() == {ids[0]: 1}
    with django_capture_on_commit_callbacks(execute=True):
        staff.patch(BULK, [{"id": ids[0], "stock": 9}], format="json")
    assert listed() == {ids[0]: 9}
    with django_capture_on_commit_callbacks(execute=True):
        staff.delete(BULK, {"ids": ids}, format="json")
    assert listed() == {}


@pytest.mark.parametrize("route", ["api:product-bulk", "api:user-bulk"])
def test_get_on_a_bulk_route_is_405(auth_client, staff_user, user, route):
    response = auth_client(staff_user).get(reverse(route))
    assert response.status_code == 405, response.content
    assert "detail" in response.json()
    # Others are refused before the method is looked at (DRF checks first).
    assert auth_client(user).get(reverse(route)).status_code in (403, 405)
