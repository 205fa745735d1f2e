import threading
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core.cache import cache, caches
from django.core.management import call_command
from django.db import connection, transaction
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from catalog.invalidation import EVERY_PRODUCT, PRODUCT
from catalog.models import Category, Product
from config.cache.local_copies import TrackedReader
from config.cache.namespaces import (
    NAMESPACE_CATEGORIES,
    NAMESPACE_OWNERS,
    NAMESPACE_PRODUCTS,
    NAMESPACE_USERS,
    bump_namespace,
    namespace_versions,
    object_namespace,
)
from config.cache.views import get_or_compute, response_cache_key
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

NAMES = (
    NAMESPACE_CATEGORIES,
    NAMESPACE_PRODUCTS,
    NAMESPACE_USERS,
    NAMESPACE_OWNERS,
    EVERY_PRODUCT,
)


def own(product: Product) -> str:
    return object_namespace(PRODUCT, product.pk)


def versions(*extra: str) -> dict[str, str]:
    found = namespace_versions(*NAMES, *extra)
    assert found is not None
    return found


def changed(before: dict[str, str]) -> set[str]:
    after = versions(*before)
    return {name for name in before if after[name] != before[name]}


@pytest.fixture
def product(db) -> Product:
    return ProductFactory()


def test_bump_namespace_changes_only_that_version():
    before = versions()
    bump_namespace(NAMESPACE_PRODUCTS)
    assert changed(before) == {NAMESPACE_PRODUCTS}


def test_lost_version_key_never_returns_an_older_version():
    first = versions()[NAMESPACE_PRODUCTS]
    cache.delete("ns:products")
    assert versions()[NAMESPACE_PRODUCTS] != first


def test_object_versions_expire_with_the_entries_they_guard(settings, product):
    bump_namespace(own(product), NAMESPACE_PRODUCTS)
    assert 0 < cache.ttl(f"ns:{own(product)}") <= settings.CACHE_TTL
    # Shared versions guard every entry: one expiring would drop them all.
    assert cache.ttl(f"ns:{NAMESPACE_PRODUCTS}") is None
    first = versions(own(product))[own(product)]
    cache.expire(f"ns:{own(product)}", 0)  # as if CACHE_TTL had passed
    assert versions(own(product))[own(product)] != first


def test_product_save_bumps_that_product_and_lists_after_commit(
    product, django_capture_on_commit_callbacks
):
    other = ProductFactory()
    before = versions(own(product), own(other))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        product.name = "Renamed"
        product.save()
    assert changed(before) == set()  # nothing until the transaction commits
    for callback in callbacks:
        callback()
    assert changed(before) == {NAMESPACE_PRODUCTS, own(product)}


def test_rolled_back_write_bumps_nothing(product, django_capture_on_commit_callbacks):
    before = versions()
    pk = product.pk
    with django_capture_on_commit_callbacks(execute=True):
        try:
            with transaction.atomic():
                product.delete()
                raise RuntimeError("abort")
        except RuntimeError:
            pass
    assert changed(before) == set()
    assert Product.objects.filter(pk=pk).exists()


# What a write bumps: lists always; the written product's detail when the
# write names its rows, every detail when it cannot; categories alone.
ROW = (NAMESPACE_PRODUCTS, "own")
UNKNOWN = (NAMESPACE_PRODUCTS, EVERY_PRODUCT)
CREATED = (NAMESPACE_PRODUCTS,)
CATEGORY = (NAMESPACE_CATEGORIES,)


@pytest.mark.parametrize(
    ("write", "bumps"),
    [
        pytest.param(lambda p: p.delete(), ROW, id="instance-delete"),
        pytest.param(
            lambda p: Product.objects.filter(pk=p.pk).update(stock=7),
            UNKNOWN,
            id="qs-update",
        ),
        pytest.param(
            lambda p: Product.objects.filter(pk=p.pk).delete(), UNKNOWN, id="qs-delete"
        ),
        pytest.param(
            lambda p: Product.objects.bulk_update(
                [Product(pk=p.pk, price=Decimal("1.00"))], ["price"]
            ),
            ROW,
            id="bulk-update",
        ),
        pytest.param(
            lambda p: Product.objects.bulk_create(
                [
                    Product(
                        sku="NEW-1",
                        name="New",
                        price=Decimal("2.00"),
                        category=p.category,
                        owner=p.owner,
                    )
                ]
            ),
            CREATED,
            id="bulk-create",
        ),
        pytest.param(
            lambda p: Product.objects.bulk_create(
                [
                    Product(
                        sku=p.sku,
                        name="Upserted",
                        price=Decimal("2.00"),
                        category=p.category,
                        owner=p.owner,
                    )
                ],
                update_conflicts=True,
                unique_fields=["sku"],
                update_fields=["name", "price"],
            ),
            ROW,
            id="bulk-upsert",
        ),
        pytest.param(
            lambda p: p.category.products.filter(pk=p.pk).update(is_active=False),
            UNKNOWN,
            id="related-manager-update",
        ),
        pytest.param(
            lambda p: CategoryFactory(name="Fresh"), CATEGORY, id="category-create"
        ),
        pytest.param(
            lambda p: Category.objects.filter(pk=p.category_id).update(name="X"),
            CATEGORY,
            id="category-qs-update",
        ),
    ],
)
def test_every_catalog_write_path_bumps_what_it_changed(
    product, write, bumps, django_capture_on_commit_callbacks
):
    mine = own(product)  # a delete clears product.pk
    before = versions(mine)
    with django_capture_on_commit_callbacks(execute=True):
        write(product)
    expected = {mine if name == "own" else name for name in bumps}
    assert changed(before) == expected


def test_writes_that_name_their_rows_keep_other_details(
    product, django_capture_on_commit_callbacks
):
    other = ProductFactory()
    mine = own(product)
    before = versions(mine, own(other))
    with django_capture_on_commit_callbacks(execute=True):
        Product.objects.bulk_update(
            [Product(pk=product.pk, price=Decimal("1.00"))], ["price"]
        )
        product.delete()
    assert changed(before) == {NAMESPACE_PRODUCTS, mine}


def test_queryset_delete_stays_one_statement(
    product, django_assert_num_queries, django_capture_on_commit_callbacks
):
    ProductFactory.create_batch(3, category=product.category, owner=product.owner)
    ids = list(Product.objects.values_list("pk", flat=True))
    before = versions()
    # One DELETE, then the bump's record in the same transaction
    # (config.cache.ledger; deleted after commit, once Redis has the bump).
    with (
        django_capture_on_commit_callbacks(execute=True),
        django_assert_num_queries(2) as captured,
    ):
        deleted = Product.objects.filter(pk__in=ids).order_by("name").delete()
    assert deleted == (4, {"catalog.Product": 4})
    sql = [q["sql"] for q in captured.captured_queries]
    assert sql[0].startswith('DELETE FROM "catalog_product"')
    assert "catalog_product" not in sql[1]
    assert changed(before) == {NAMESPACE_PRODUCTS, EVERY_PRODUCT}


def test_empty_queryset_writes_bump_nothing(django_capture_on_commit_callbacks):
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        Product.objects.filter(pk=-1).update(stock=1)
        Product.objects.filter(pk=-1).delete()
    assert changed(before) == set()


def test_category_delete_bumps_categories(django_capture_on_commit_callbacks):
    category = CategoryFactory()
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        category.delete()
    assert changed(before) == {NAMESPACE_CATEGORIES}


def test_sign_up_bumps_users_but_keeps_product_pages(
    django_capture_on_commit_callbacks,
):
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        UserFactory()
    assert changed(before) == {NAMESPACE_USERS}


def test_bulk_created_users_bump_users_only(django_capture_on_commit_callbacks):
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        User.objects.bulk_create(
            [User(email="bulk@example.com", username="bulk", password="!")]
        )
    assert changed(before) == {NAMESPACE_USERS}


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda u: User.objects.filter(pk=u.pk).update(is_active=False),
            id="deactivate-qs-update",
        ),
        pytest.param(
            lambda u: (setattr(u, "username", "renamed"), u.save()), id="rename-save"
        ),
        pytest.param(
            lambda u: User.objects.bulk_update(
                [User(pk=u.pk, username="renamed")], ["username"]
            ),
            id="bulk-update",
        ),
    ],
)
def test_user_changes_shown_on_products_bump_owners(
    write, django_capture_on_commit_callbacks
):
    owner = UserFactory()
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        write(owner)
    assert changed(before) == {NAMESPACE_USERS, NAMESPACE_OWNERS}


def test_last_login_update_keeps_product_pages(django_capture_on_commit_callbacks):
    owner = UserFactory()
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        owner.last_login = timezone.now()
        owner.save(update_fields=["last_login"])
    assert changed(before) == {NAMESPACE_USERS}


def test_concurrent_misses_on_one_key_compute_once():
    calls = []
    results = []
    start = threading.Barrier(6)

    def compute():
        calls.append(1)
        time.sleep(0.3)  # long enough for every other thread to miss meanwhile
        return b"rendered"

    def worker():
        start.wait()
        results.append(get_or_compute("hot-key", compute, timeout=60))
        caches.close_all()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True, True, True, True]
    assert {value for value, _ in results} == {b"rendered"}


def test_entry_is_served_only_while_its_namespace_versions_hold():
    def compute(value):
        return lambda: value

    names = (NAMESPACE_PRODUCTS,)
    assert get_or_compute("k", compute(b"1"), timeout=60, namespaces=names) == (
        b"1",
        False,
    )
    assert get_or_compute("k", compute(b"2"), timeout=60, namespaces=names) == (
        b"1",
        True,
    )
    bump_namespace(NAMESPACE_USERS)  # another namespace: still valid
    assert get_or_compute("k", compute(b"2"), timeout=60, namespaces=names)[1]
    bump_namespace(NAMESPACE_PRODUCTS)
    assert get_or_compute("k", compute(b"3"), timeout=60, namespaces=names) == (
        b"3",
        False,
    )


def test_failed_computation_releases_the_lock():
    def boom():
        raise ValueError("no")

    with pytest.raises(ValueError):
        get_or_compute("k", boom, timeout=60)
    assert get_or_compute("k", lambda: b"ok", timeout=60) == (b"ok", False)
    assert get_or_compute("k", lambda: b"other", timeout=60) == (b"ok", True)


@pytest.mark.parametrize(
    ("url", "locks"),
    [
        ("/api/v1/products/?limit=20&offset=20", 0),
        ("/api/v1/products/?ordering=price&limit=5", 0),
        (lambda product: f"/api/v1/products/{product.pk}/", 0),
        ("/api/v1/products/?search=lamp", 1),
        ("/api/v1/categories/", 1),
    ],
    ids=["page", "ordered-page", "detail", "search", "categories"],
)
def test_only_costly_misses_take_the_stampede_lock(client, monkeypatch, url, locks):
    product = ProductFactory(name="Lamp")
    url = url(product) if callable(url) else url
    taken = []
    backend = type(caches["default"])
    add = backend.add

    def recording_add(self, key, *args, **kwargs):
        if ":lock:" in key:
            taken.append(key)
        return add(self, key, *args, **kwargs)

    monkeypatch.setattr(backend, "add", recording_add)
    response = client.get(url)
    assert (response.status_code, response["X-Cache"]) == (200, "MISS")
    assert len(taken) == locks
    # The entry is stored either way, and the lock (if any) is released.
    assert client.get(url)["X-Cache"] == "HIT"
    assert all(cache.get(key) is None for key in taken)


@pytest.fixture
def redis_writes(monkeypatch) -> list[list[tuple]]:
    """Record the commands of each round trip that writes to Redis."""
    sent: list[list[tuple]] = []
    execute = TrackedReader.execute

    def recording(self, commands):
        if any(command[0] == "SET" for command in commands):
            sent.append([tuple(command) for command in commands])
        return execute(self, commands)

    monkeypatch.setattr(TrackedReader, "execute", recording)
    return sent


def _added(commands: list[tuple]) -> list[str]:
    return [c[1] for c in commands if c[0] == "SET" and c[-1] == "NX"]


def test_a_first_read_of_a_product_adds_its_version_with_its_entry(
    client, product, redis_writes
):
    versions()  # the shared versions exist: only the product's is missing
    redis_writes.clear()
    url = f"/api/v1/products/{product.pk}/"
    assert client.get(url)["X-Cache"] == "MISS"
    # One round trip stored the entry and added the product's new version.
    [commands] = redis_writes
    assert _added(commands) == [cache.make_key(f"ns:{own(product)}")]
    assert len(commands) == 2
    assert client.get(url)["X-Cache"] == "HIT"


def test_a_page_of_new_products_adds_their_versions_with_their_fragments(
    client, redis_writes
):
    products = ProductFactory.create_batch(3)
    versions()
    redis_writes.clear()
    url = "/api/v1/products/?limit=3"
    assert client.get(url)["X-Cache"] == "MISS"
    # The fragments and their products' versions in one round trip, then the
    # page's own entry.
    fragments, page = redis_writes
    assert sorted(_added(fragments)) == sorted(
        cache.make_key(f"ns:{own(product)}") for product in products
    )
    assert _added(page) == []
    # Stored under the versions they added: an insert elsewhere invalidates
    # the page, whose items are then served from their fragments.
    bump_namespace(NAMESPACE_PRODUCTS)
    redis_writes.clear()
    assert client.get(url)["X-Cache"] == "MISS"
    [page] = redis_writes
    assert len(page) == 1


@pytest.mark.parametrize("racer", ["write", "other-reader"])
def test_an_entry_under_a_drawn_version_that_lost_is_never_served(racer):
    name = object_namespace(PRODUCT, 10**12)

    def compute_while_racing():
        # Between this read's version lookup and its store: a write commits
        # and bumps, or another reader adds the version it drew.
        if racer == "write":
            bump_namespace(name)
        else:
            cache.add(f"ns:{name}", "drawn-elsewhere", 60)
        return b"computed before"

    def read(compute):
        return get_or_compute(
            "k", compute, timeout=60, namespaces=(name,), single_flight=False
        )

    assert read(compute_while_racing) == (b"computed before", False)
    assert read(lambda: b"computed after") == (b"computed after", False)
    assert read(lambda: b"unused") == (b"computed after", True)


def test_cache_key_ignores_query_order_but_not_host_or_audience(settings):
    settings.ALLOWED_HOSTS = ["testserver", "other.test"]
    factory = RequestFactory()

    def key(url="/api/v1/products/?b=2&a=1", host="testserver", **overrides):
        params = {"view_id": "v", "audience": "public"}
        params.update(overrides)
        return response_cache_key(factory.get(url, HTTP_HOST=host), **params)

    assert key() == key("/api/v1/products/?a=1&b=2")
    assert key() != key("/api/v1/products/?a=1&b=3")
    assert key("/api/v1/products/?o=a&o=b") != key("/api/v1/products/?o=b&o=a")
    assert key() != key(host="other.test")
    assert key() != key(audience="staff")


def test_clear_deletes_only_this_prefix():
    client = cache.client.get_client()
    client.set("someone-else:1:key", "kept")
    cache.set("mine", "gone")
    cache.clear()
    assert cache.get("mine") is None
    assert client.get("someone-else:1:key") == b"kept"
    client.delete("someone-else:1:key")


# --- Through the API: read, write by every path, read again --------------------


def detail_url(product: Product) -> str:
    return reverse("api:product-detail", args=[product.pk])


LIST_URL = "/api/v1/products/?ordering=name&limit=100"


def cached(client, url: str) -> dict:
    """GET *url* twice and return the body, checking the second read was a hit."""
    client.get(url)
    response = client.get(url)
    assert response.status_code == 200
    assert response["X-Cache"] == "HIT"
    return response.json()


def fresh(client, url: str):
    response = client.get(url)
    assert response["X-Cache"] == "MISS"
    return response


@pytest.fixture
def owner(db) -> User:
    return UserFactory(username="maker")


@pytest.fixture
def item(owner) -> Product:
    return ProductFactory(
        owner=owner, sku="ITEM-1", name="Lamp", price=Decimal("10.00"), stock=5
    )


@pytest.fixture
def staff(auth_client, staff_user):
    return auth_client(staff_user)


def test_public_reads_are_shared_across_callers(api_client, auth_client, user, item):
    api_client.get(detail_url(item))
    assert auth_client(user).get(detail_url(item))["X-Cache"] == "HIT"


def test_staff_and_public_product_pages_are_cached_apart(api_client, staff, item):
    Product.objects.filter(pk=item.pk).update(is_active=False)
    assert staff.get(detail_url(item)).status_code == 200
    assert api_client.get(detail_url(item)).status_code == 404
    assert staff.get(LIST_URL).json()["count"] == 1
    assert api_client.get(LIST_URL).json()["count"] == 0


def test_query_order_is_normalised(api_client, item):
    api_client.get("/api/v1/products/?limit=5&ordering=name")
    assert api_client.get("/api/v1/products/?ordering=name&limit=5")["X-Cache"] == "HIT"


def test_hit_still_checks_credentials(api_client, item):
    api_client.get(detail_url(item))
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert api_client.get(detail_url(item)).status_code == 401


def test_hit_answers_if_none_match_with_304(api_client, item):
    etag = api_client.get(detail_url(item))["ETag"]
    response = api_client.get(detail_url(item), HTTP_IF_NONE_MATCH=etag)
    assert (response.status_code, response["X-Cache"]) == (304, "HIT")
    response = api_client.get(detail_url(item), HTTP_IF_NONE_MATCH=f"W/{etag}")
    assert (response.status_code, response["X-Cache"]) == (304, "HIT")
    response = api_client.get(detail_url(item), HTTP_IF_NONE_MATCH='"other"')
    assert (response.status_code, response["X-Cache"]) == (200, "HIT")


def test_cached_list_query_count_is_constant(
    api_client, item, django_assert_num_queries
):
    ProductFactory.create_batch(30, owner=item.owner, category=item.category)
    api_client.get(LIST_URL)
    with django_assert_num_queries(0):
        assert api_client.get(LIST_URL)["X-Cache"] == "HIT"


def test_api_create_shows_in_list(
    auth_client, user, item, django_capture_on_commit_callbacks
):
    client = auth_client(user)
    assert cached(client, LIST_URL)["count"] == 1
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("api:product-list"),
            {
                "sku": "NEW-9",
                "name": "New",
                "price": "3.00",
                "category": item.category_id,
            },
        )
    assert response.status_code == 201, response.content
    assert fresh(client, LIST_URL).json()["count"] == 2


@pytest.mark.parametrize("method", ["patch", "put"])
def test_api_update_shows_in_detail_and_list(
    auth_client, owner, item, method, django_capture_on_commit_callbacks
):
    client = auth_client(owner)
    assert cached(client, detail_url(item))["price"] == "10.00"
    assert cached(client, LIST_URL)["results"][0]["price"] == "10.00"
    body = {"price": "12.00"}
    if method == "put":
        body |= {"sku": item.sku, "name": item.name, "category": item.category_id}
    with django_capture_on_commit_callbacks(execute=True):
        assert getattr(client, method)(detail_url(item), body).status_code == 200
    assert fresh(client, detail_url(item)).json()["price"] == "12.00"
    assert fresh(client, LIST_URL).json()["results"][0]["price"] == "12.00"


def test_api_delete_removes_detail_and_list_entry(
    auth_client, owner, item, django_capture_on_commit_callbacks
):
    client = auth_client(owner)
    cached(client, detail_url(item))
    cached(client, LIST_URL)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete(detail_url(item)).status_code == 204
    assert client.get(detail_url(item)).status_code == 404
    assert fresh(client, LIST_URL).json()["count"] == 0


@pytest.mark.parametrize("method", ["post", "patch", "put", "delete"])
def test_api_write_of_one_product_keeps_other_details_cached(
    auth_client, owner, item, method, django_capture_on_commit_callbacks
):
    other = ProductFactory(owner=owner, category=item.category, name="Desk")
    client = auth_client(owner)
    cached(client, detail_url(other))
    cached(client, detail_url(item))
    body = {"sku": "NEW-7", "name": "Chair", "price": "12.00"}
    body["category"] = item.category_id
    with django_capture_on_commit_callbacks(execute=True):
        if method == "post":
            response = client.post(reverse("api:product-list"), body)
        else:
            response = getattr(client, method)(detail_url(item), body)
    assert response.status_code in (200, 201, 204), response.content
    again = client.get(detail_url(other))
    assert (again["X-Cache"], again.json()["name"]) == ("HIT", "Desk")
    if method in ("patch", "put"):
        assert fresh(client, detail_url(item)).json()["name"] == "Chair"
    elif method == "delete":
        assert client.get(detail_url(item)).status_code == 404
    else:
        assert client.get(detail_url(item))["X-Cache"] == "HIT"


def test_a_detail_spelled_with_leading_zeros_is_refreshed_after_a_write(
    api_client, item, django_capture_on_commit_callbacks
):
    url = f"/api/v1/products/00{item.pk}/"
    assert cached(api_client, url)["name"] == "Lamp"
    with django_capture_on_commit_callbacks(execute=True):
        item.name = "Desk"
        item.save()
    assert fresh(api_client, url).json()["name"] == "Desk"


def test_bulk_api_writes_show_at_once(staff, item, django_capture_on_commit_callbacks):
    bulk = reverse("api:product-bulk")
    cached(staff, LIST_URL)
    with django_capture_on_commit_callbacks(execute=True):
        created = staff.post(
            bulk,
            [
                {
                    "sku": "B-1",
                    "name": "Bulk",
                    "price": "1.00",
                    "category": item.category_id,
                }
            ],
        )
    assert created.status_code == 201, created.content
    assert fresh(staff, LIST_URL).json()["count"] == 2

    cached(staff, detail_url(item))
    with django_capture_on_commit_callbacks(execute=True):
        patched = staff.patch(bulk, [{"id": item.pk, "stock": 99}])
    assert patched.status_code == 200, patched.content
    assert fresh(staff, detail_url(item)).json()["stock"] == 99

    cached(staff, LIST_URL)
    with django_capture_on_commit_callbacks(execute=True):
        deleted = staff.delete(bulk, {"ids": [item.pk]})
    assert deleted.status_code == 200, deleted.content
    assert staff.get(detail_url(item)).status_code == 404
    assert fresh(staff, LIST_URL).json()["count"] == 1


def test_admin_change_form_shows_at_once(
    api_client, admin_client, item, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    url = reverse("admin:catalog_product_change", args=[item.pk])
    data = {
        "sku": item.sku,
        "name": "Desk lamp",
        "slug": item.slug,
        "description": item.description,
        "price": "10.00",
        "stock": "5",
        "is_active": "on",
        "category": item.category_id,
        "owner": item.owner_id,
        "created_at_0": item.created_at.strftime("%Y-%m-%d"),
        "created_at_1": item.created_at.strftime("%H:%M:%S"),
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data)
    assert response.status_code == 302, response.content[:2000]
    assert fresh(api_client, detail_url(item)).json()["name"] == "Desk lamp"


def test_admin_list_editable_shows_at_once(
    api_client, admin_client, item, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    data = {
        "form-TOTAL_FORMS": "1",
        "form-INITIAL_FORMS": "1",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "form-0-id": item.pk,
        "form-0-price": "42.00",
        "form-0-stock": "5",
        "form-0-is_active": "on",
        "_save": "Save",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:catalog_product_changelist"), data)
    assert response.status_code == 302, response.content[:2000]
    assert fresh(api_client, detail_url(item)).json()["price"] == "42.00"


def test_admin_action_shows_at_once(
    api_client, admin_client, item, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:catalog_product_changelist"),
            {"action": "deactivate_products", "_selected_action": [item.pk]},
        )
    assert api_client.get(detail_url(item)).status_code == 404


def test_admin_delete_shows_at_once(
    api_client, admin_client, item, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:catalog_product_delete", args=[item.pk]), {"post": "yes"}
        )
    assert api_client.get(detail_url(item)).status_code == 404


def test_import_command_shows_at_once(
    api_client, item, tmp_path, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    path = tmp_path / "products.csv"
    path.write_text(
        "sku,name,price,category,owner,stock,description,is_active\n"
        f"{item.sku},Imported lamp,11.00,{item.category.slug},{item.owner.email},"
        "5,x,true\n"
    )
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_products", str(path), stdout=StringIO(), stderr=StringIO())
    assert fresh(api_client, detail_url(item)).json()["name"] == "Imported lamp"


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda p: Product.objects.filter(pk=p.pk).update(name="Changed"),
            id="update",
        ),
        pytest.param(
            lambda p: Product.objects.bulk_update(
                [Product(pk=p.pk, name="Changed")], ["name"]
            ),
            id="bulk_update",
        ),
        pytest.param(
            lambda p: Product.objects.bulk_create(
                [
                    Product(
                        sku=p.sku,
                        name="Changed",
                        price=p.price,
                        category=p.category,
                        owner=p.owner,
                    )
                ],
                update_conflicts=True,
                unique_fields=["sku"],
                update_fields=["name"],
            ),
            id="bulk_create-upsert",
        ),
    ],
)
def test_queryset_writes_show_at_once(
    api_client, item, write, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    cached(api_client, LIST_URL)  # its item's fragment too
    with django_capture_on_commit_callbacks(execute=True):
        write(item)
    assert fresh(api_client, detail_url(item)).json()["name"] == "Changed"
    assert fresh(api_client, LIST_URL).json()["results"][0]["name"] == "Changed"


def test_category_rename_shows_in_embedded_category(
    api_client, staff, item, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    cached(api_client, LIST_URL)
    cached(api_client, reverse("api:category-list"))
    url = reverse("api:category-detail", args=[item.category_id])
    with django_capture_on_commit_callbacks(execute=True):
        assert staff.patch(url, {"name": "Lighting"}).status_code == 200
    assert fresh(api_client, detail_url(item)).json()["category"]["name"] == "Lighting"
    [listed] = fresh(api_client, LIST_URL).json()["results"]
    assert listed["category"]["name"] == "Lighting"
    names = [
        c["name"]
        for c in fresh(api_client, reverse("api:category-list")).json()["results"]
    ]
    assert "Lighting" in names


def test_category_delete_shows_at_once(
    api_client, staff, django_capture_on_commit_callbacks
):
    empty = CategoryFactory()
    url = reverse("api:category-detail", args=[empty.pk])
    cached(api_client, url)
    with django_capture_on_commit_callbacks(execute=True):
        assert staff.delete(url).status_code == 204
    assert api_client.get(url).status_code == 404


def test_owner_rename_shows_on_their_products(
    api_client, auth_client, owner, item, django_capture_on_commit_callbacks
):
    assert cached(api_client, detail_url(item))["owner"]["username"] == "maker"
    assert cached(api_client, LIST_URL)["results"][0]["owner"]["username"] == "maker"
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client(owner).patch(
            reverse("api:user-me"), {"username": "craftsman"}
        )
    assert response.status_code == 200, response.content
    body = fresh(api_client, detail_url(item)).json()
    assert body["owner"]["username"] == "craftsman"
    [listed] = fresh(api_client, LIST_URL).json()["results"]
    assert listed["owner"]["username"] == "craftsman"


def test_sign_up_keeps_product_pages_cached(
    api_client, item, django_capture_on_commit_callbacks
):
    cached(api_client, detail_url(item))
    with django_capture_on_commit_callbacks(execute=True):
        UserFactory()
    assert api_client.get(detail_url(item))["X-Cache"] == "HIT"


# --- Users ---------------------------------------------------------------------


def user_url(user: User) -> str:
    return reverse("api:user-detail", args=[user.pk])


def test_user_pages_are_cached_per_caller(auth_client, user, other_user):
    mine = auth_client(user)
    theirs = auth_client(other_user)
    assert cached(mine, user_url(user))["email"] == user.email
    assert "email" not in theirs.get(user_url(user)).json()
    assert cached(mine, reverse("api:user-me"))["id"] == user.pk
    assert theirs.get(reverse("api:user-me")).json()["id"] == other_user.pk


def test_user_detail_lives_user_cache_ttl(auth_client, user, settings):
    settings.USER_CACHE_TTL = 300
    settings.CACHE_TTL = 3600
    client = auth_client(user)
    client.get(user_url(user))
    client.get(reverse("api:user-list"))
    ttls = sorted(
        cache.ttl(key)
        for key in cache.keys("resp:*")  # the cache's own prefix applies
    )
    assert len(ttls) == 2
    assert 0 < ttls[0] <= 300 < ttls[1] <= 3600


def test_profile_change_shows_at_once(
    auth_client, user, staff, django_capture_on_commit_callbacks
):
    client = auth_client(user)
    cached(client, reverse("api:user-me"))
    cached(client, user_url(user))
    cached(staff, reverse("api:user-list"))
    with django_capture_on_commit_callbacks(execute=True):
        client.patch(reverse("api:user-me"), {"username": "renamed"})
    assert fresh(client, reverse("api:user-me")).json()["username"] == "renamed"
    assert fresh(client, user_url(user)).json()["username"] == "renamed"
    names = [
        u["username"] for u in fresh(staff, reverse("api:user-list")).json()["results"]
    ]
    assert "renamed" in names


def test_deactivation_shows_at_once(
    auth_client, user, other_user, staff, django_capture_on_commit_callbacks
):
    viewer = auth_client(other_user)
    cached(viewer, user_url(user))
    with django_capture_on_commit_callbacks(execute=True):
        assert staff.delete(user_url(user)).status_code == 204
    assert viewer.get(user_url(user)).status_code == 404


def test_registration_and_bulk_show_in_staff_list(
    api_client, staff, staff_user, django_capture_on_commit_callbacks
):
    count = cached(staff, reverse("api:user-list"))["count"]
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            reverse("api:user-list"),
            {"email": "new@example.com", "password": "a-Long-pass-123"},
        )
    assert response.status_code == 201, response.content
    assert fresh(staff, reverse("api:user-list")).json()["count"] == count + 1
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            reverse("api:user-bulk"), [{"email": "b1@example.com", "username": "b1"}]
        )
    assert response.status_code == 201, response.content
    assert fresh(staff, reverse("api:user-list")).json()["count"] == count + 2


def test_admin_user_action_and_import_show_at_once(
    auth_client,
    user,
    other_user,
    admin_client,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    viewer = auth_client(other_user)
    cached(viewer, user_url(user))
    path = tmp_path / "users.csv"
    path.write_text(f"email,username\n{user.email},imported\n")
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_users", str(path), stdout=StringIO(), stderr=StringIO())
    assert fresh(viewer, user_url(user)).json()["username"] == "imported"
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:accounts_user_changelist"),
            {"action": "deactivate_users", "_selected_action": [user.pk]},
        )
    assert viewer.get(user_url(user)).status_code == 404


def test_seed_demo_shows_at_once(api_client, django_capture_on_commit_callbacks):
    assert cached(api_client, LIST_URL)["count"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "seed_demo", users=2, products=3, categories=1, seed=1, stdout=StringIO()
        )
    assert fresh(api_client, LIST_URL).json()["count"] == 3


def test_interrupted_seed_demo_refreshes_what_it_committed(
    api_client, monkeypatch, django_capture_on_commit_callbacks
):
    url = reverse("api:category-list")
    assert cached(api_client, url)["count"] == 0

    def interrupted(*, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(
        "catalog.management.commands.seed_demo.products_add", interrupted
    )
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(KeyboardInterrupt),
    ):
        call_command("seed_demo", users=2, products=5, categories=3, stdout=StringIO())
    assert fresh(api_client, url).json()["count"] == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_misses_on_the_dashboard_compute_it_once(auth_client, monkeypatch):
    import catalog.api.dashboard as view_module

    staff_member = UserFactory(staff=True)
    clients = [auth_client(staff_member) for _ in range(4)]
    computed = []
    real = view_module.dashboard

    def slow_dashboard():
        computed.append(1)
        time.sleep(0.3)  # long enough for every other request to miss meanwhile
        return real()

    monkeypatch.setattr(view_module, "dashboard", slow_dashboard)
    start = threading.Barrier(len(clients))
    answers = []

    def read(client):
        start.wait()
        response = client.get(reverse("api:analytics-dashboard"))
        answers.append((response.status_code, response["X-Cache"]))
        connection.close()

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(computed) == 1
    assert sorted(answers) == [(200, "HIT")] * 3 + [(200, "MISS")]


def test_hits_and_misses_are_counted(api_client, item):
    from prometheus_client import REGISTRY

    def count(name: str) -> float:
        labels = {"namespace": "categories,products,owners"}
        return REGISTRY.get_sample_value(f"{name}_total", labels) or 0.0

    hits, misses = count("app_cache_hits"), count("app_cache_misses")
    api_client.get(detail_url(item))
    api_client.get(detail_url(item))
    assert count("app_cache_misses") == misses + 1
    assert count("app_cache_hits") == hits + 1


def test_upsert_services_refresh_reads_whoever_calls_them(
    api_client, auth_client, item, django_capture_on_commit_callbacks
):
    from accounts.services import users_upsert
    from catalog.services import products_upsert

    cached(api_client, detail_url(item))
    row = {
        "sku": item.sku,
        "name": "Upserted lamp",
        "price": Decimal("10.00"),
        "category_id": item.category_id,
        "owner_id": item.owner_id,
    }
    with django_capture_on_commit_callbacks(execute=True):
        products_upsert(rows=[row])
    assert fresh(api_client, detail_url(item)).json()["name"] == "Upserted lamp"

    viewer = auth_client(UserFactory())
    cached(viewer, user_url(item.owner))
    with django_capture_on_commit_callbacks(execute=True):
        users_upsert(rows=[{"email": item.owner.email, "username": "upserted"}])
    assert fresh(viewer, user_url(item.owner)).json()["username"] == "upserted"
