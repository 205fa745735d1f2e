import threading
import time
from decimal import Decimal

import pytest
from django.core.cache import cache, caches
from django.db import transaction
from django.test import RequestFactory
from django.utils import timezone

from accounts.models import User
from catalog.models import Category, Product
from config.cache import (
    NAMESPACE_CATALOG,
    NAMESPACE_OWNERS,
    NAMESPACE_USERS,
    bump_namespace,
    get_or_compute,
    namespace_versions,
    response_cache_key,
)
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

NAMES = (NAMESPACE_CATALOG, NAMESPACE_USERS, NAMESPACE_OWNERS)


def versions() -> dict[str, str]:
    found = namespace_versions(*NAMES)
    assert found is not None
    return found


def changed(before: dict[str, str]) -> set[str]:
    after = versions()
    return {name for name in NAMES if after[name] != before[name]}


@pytest.fixture
def product(db) -> Product:
    return ProductFactory()


def test_bump_namespace_changes_only_that_version():
    before = versions()
    bump_namespace(NAMESPACE_CATALOG)
    assert changed(before) == {NAMESPACE_CATALOG}


def test_lost_version_key_never_returns_an_older_version():
    first = versions()[NAMESPACE_CATALOG]
    cache.delete("ns:catalog")
    assert versions()[NAMESPACE_CATALOG] != first


def test_product_save_bumps_catalog_after_commit(
    product, django_capture_on_commit_callbacks
):
    before = versions()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        product.name = "Renamed"
        product.save()
    assert changed(before) == set()  # nothing until the transaction commits
    for callback in callbacks:
        callback()
    assert changed(before) == {NAMESPACE_CATALOG}


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


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda p: p.delete(), id="instance-delete"),
        pytest.param(
            lambda p: Product.objects.filter(pk=p.pk).update(stock=7), id="qs-update"
        ),
        pytest.param(
            lambda p: Product.objects.filter(pk=p.pk).delete(), id="qs-delete"
        ),
        pytest.param(
            lambda p: Product.objects.bulk_update(
                [Product(pk=p.pk, price=Decimal("1.00"))], ["price"]
            ),
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
            id="bulk-upsert",
        ),
        pytest.param(
            lambda p: p.category.products.filter(pk=p.pk).update(is_active=False),
            id="related-manager-update",
        ),
        pytest.param(lambda p: CategoryFactory(name="Fresh"), id="category-create"),
        pytest.param(
            lambda p: Category.objects.filter(pk=p.category_id).update(name="X"),
            id="category-qs-update",
        ),
    ],
)
def test_every_catalog_write_path_bumps_catalog(
    product, write, django_capture_on_commit_callbacks
):
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        write(product)
    assert NAMESPACE_CATALOG in changed(before)


def test_queryset_delete_stays_one_statement(
    product, django_assert_num_queries, django_capture_on_commit_callbacks
):
    ProductFactory.create_batch(3, category=product.category, owner=product.owner)
    ids = list(Product.objects.values_list("pk", flat=True))
    before = versions()
    with (
        django_capture_on_commit_callbacks(execute=True),
        django_assert_num_queries(1),
    ):
        deleted = Product.objects.filter(pk__in=ids).order_by("name").delete()
    assert deleted == (4, {"catalog.Product": 4})
    assert changed(before) == {NAMESPACE_CATALOG}


def test_empty_queryset_writes_bump_nothing(django_capture_on_commit_callbacks):
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        Product.objects.filter(pk=-1).update(stock=1)
        Product.objects.filter(pk=-1).delete()
    assert changed(before) == set()


def test_category_delete_bumps_catalog(django_capture_on_commit_callbacks):
    category = CategoryFactory()
    before = versions()
    with django_capture_on_commit_callbacks(execute=True):
        category.delete()
    assert changed(before) == {NAMESPACE_CATALOG}


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


def test_failed_computation_releases_the_lock():
    def boom():
        raise ValueError("no")

    with pytest.raises(ValueError):
        get_or_compute("k", boom, timeout=60)
    assert get_or_compute("k", lambda: b"ok", timeout=60) == (b"ok", False)
    assert get_or_compute("k", lambda: b"other", timeout=60) == (b"ok", True)


def test_cache_key_ignores_query_order_but_not_host_audience_or_versions(settings):
    settings.ALLOWED_HOSTS = ["testserver", "other.test"]
    factory = RequestFactory()

    def key(url="/api/v1/products/?b=2&a=1", host="testserver", **overrides):
        params = {"view_id": "v", "versions": {"catalog": "1"}, "audience": "public"}
        params.update(overrides)
        return response_cache_key(factory.get(url, HTTP_HOST=host), **params)

    assert key() == key("/api/v1/products/?a=1&b=2")
    assert key() != key("/api/v1/products/?a=1&b=3")
    assert key("/api/v1/products/?o=a&o=b") != key("/api/v1/products/?o=b&o=a")
    assert key() != key(host="other.test")
    assert key() != key(audience="staff")
    assert key() != key(versions={"catalog": "2"})


def test_clear_deletes_only_this_prefix():
    client = cache.client.get_client()
    client.set("someone-else:1:key", "kept")
    cache.set("mine", "gone")
    cache.clear()
    assert cache.get("mine") is None
    assert client.get("someone-else:1:key") == b"kept"
    client.delete("someone-else:1:key")
