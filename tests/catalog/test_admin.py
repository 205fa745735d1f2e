from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse

from catalog import managers
from catalog.models import Category, Product
from config.admin_display import CHANGELIST_CSS
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:catalog_product_changelist"


def test_changelist_runs_constant_queries_whatever_the_page(
    admin_client, django_assert_max_num_queries
):
    ProductFactory.create_batch(30)
    url = reverse(CHANGELIST)
    admin_client.get(url)  # warm the session and content types
    with django_assert_max_num_queries(12):
        response = admin_client.get(url)
    assert response.status_code == 200
    ProductFactory.create_batch(20)
    with django_assert_max_num_queries(12):
        admin_client.get(url)


def test_search_is_the_api_search_words_or_sku_prefix(admin_client):
    ProductFactory(sku="ABC-123", name="Walnut desk", description="Sturdy.")
    ProductFactory(sku="XYZ-999", name="Oak chair", description="Walnut legs.")
    url = reverse(CHANGELIST)

    def skus(term: str) -> set[str]:
        content = admin_client.get(url, {"q": term}).content
        return {sku for sku in ("ABC-123", "XYZ-999") if sku.encode() in content}

    assert skus("abc-1") == {"ABC-123"}
    assert skus("oak") == {"XYZ-999"}
    assert skus("walnuts") == {"ABC-123", "XYZ-999"}
    assert skus("sturdy walnut") == {"ABC-123"}
    assert skus("999") == set()


@pytest.mark.parametrize("sorted_up_to", [0, 10_000])
def test_search_runs_constant_queries_and_keeps_the_order(
    admin_client, django_assert_max_num_queries, monkeypatch, sorted_up_to
):
    # Either plan (walk the ordering's index, or sort the matches) keeps the
    # changelist's newest-first order.
    monkeypatch.setattr(managers, "SEARCH_WALK_SHARE", 2.0)
    monkeypatch.setattr(managers, "SEARCH_SORTED_UP_TO", sorted_up_to)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(3):
        ProductFactory(
            sku=f"W-{day}", name="Walnut desk", created_at=now.replace(day=day + 1)
        )
    url = reverse(CHANGELIST)
    admin_client.get(url)  # warm the session and content types
    with django_assert_max_num_queries(13):
        content = admin_client.get(url, {"q": "walnut"}).content.decode()
    assert content.index("W-2") < content.index("W-1") < content.index("W-0")
    ProductFactory.create_batch(20, name="Walnut chair")
    with django_assert_max_num_queries(13):
        admin_client.get(url, {"q": "walnut"})


def test_filters(admin_client):
    category = CategoryFactory()
    in_stock = ProductFactory(category=category, stock=5)
    sold_out = ProductFactory(stock=0, is_active=False)
    url = reverse(CHANGELIST)
    content = admin_client.get(url, {"in_stock": "yes"}).content
    assert in_stock.sku.encode() in content
    assert sold_out.sku.encode() not in content
    content = admin_client.get(url, {"in_stock": "no"}).content
    assert sold_out.sku.encode() in content
    content = admin_client.get(url, {"is_active__exact": "0"}).content
    assert sold_out.sku.encode() in content
    assert in_stock.sku.encode() not in content
    content = admin_client.get(url, {"category__id__exact": category.pk}).content
    assert in_stock.sku.encode() in content
    assert sold_out.sku.encode() not in content


def test_add_and_change_product(admin_client):
    category = CategoryFactory()
    owner = UserFactory()
    data = {
        "sku": "NEW-1",
        "name": "New thing",
        "slug": "new-thing",
        "description": "",
        "price": "9.99",
        "stock": "3",
        "is_active": "on",
        "category": category.pk,
        "owner": owner.pk,
    }
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.content
    product = Product.objects.get(sku="NEW-1")
    change_url = reverse("admin:catalog_product_change", args=[product.pk])
    assert admin_client.get(change_url).status_code == 200
    response = admin_client.post(change_url, {**data, "price": "12.50"})
    assert response.status_code == 302
    product.refresh_from_db()
    assert product.price == Decimal("12.50")


def test_change_form_rejects_negative_price(admin_client):
    product = ProductFactory()
    response = admin_client.post(
        reverse("admin:catalog_product_change", args=[product.pk]),
        {
            "sku": product.sku,
            "name": product.name,
            "price": "-1",
            "stock": "1",
            "category": product.category_id,
            "owner": product.owner_id,
        },
    )
    assert response.status_code == 200
    assert b"greater than or equal to 0" in response.content


def test_list_editable_saves_price_stock_active(admin_client):
    product = ProductFactory(price=Decimal("1.00"), stock=1)
    response = admin_client.post(
        reverse(CHANGELIST),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": product.pk,
            "form-0-price": "2.50",
            "form-0-stock": "7",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content
    product.refresh_from_db()
    assert (product.price, product.stock, product.is_active) == (
        Decimal("2.50"),
        7,
        False,
    )


def test_activate_and_deactivate_actions(admin_client):
    products = ProductFactory.create_batch(3)
    ids = [p.pk for p in products]
    url = reverse(CHANGELIST)
    admin_client.post(url, {"action": "deactivate_products", "_selected_action": ids})
    assert Product.objects.filter(pk__in=ids, is_active=False).count() == 3
    admin_client.post(url, {"action": "activate_products", "_selected_action": ids})
    assert Product.objects.filter(pk__in=ids, is_active=True).count() == 3


def test_category_admin_and_autocomplete(admin_client):
    CategoryFactory(name="Garden", slug="garden")
    response = admin_client.get(
        reverse("admin:catalog_category_changelist"), {"q": "gard"}
    )
    assert b"Garden" in response.content
    response = admin_client.get(
        reverse("admin:autocomplete"),
        {
            "term": "gard",
            "app_label": "catalog",
            "model_name": "product",
            "field_name": "category",
        },
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["text"] == "Garden"
    assert Category.objects.count() == 1


def test_date_hierarchy_lists_calendar_periods_between_first_and_last_rows(
    admin_client, django_assert_max_num_queries
):
    ProductFactory(created_at=datetime(2024, 11, 5, tzinfo=UTC))
    ProductFactory(created_at=datetime(2026, 2, 10, tzinfo=UTC))
    url = reverse(CHANGELIST)
    content = admin_client.get(url).content.decode()
    for year in ("2024", "2025", "2026"):
        assert f"created_at__year={year}" in content
    content = admin_client.get(url, {"created_at__year": "2024"}).content.decode()
    assert "created_at__month=11" in content
    assert "created_at__month=12" in content
    assert "created_at__month=10" not in content
    content = admin_client.get(
        url, {"created_at__year": "2026", "created_at__month": "2"}
    ).content.decode()
    assert "created_at__day=28" in content
    assert "created_at__day=29" not in content
    response = admin_client.get(
        url,
        {"created_at__year": "2026", "created_at__month": "2", "created_at__day": "10"},
    )
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1


def test_changelist_fits_a_1280_px_window_with_its_editable_columns(admin_client):
    ProductFactory(
        sku="DEMO-0000001",
        name="Handy steel widget with a very long descriptive name",
        price=Decimal("12.50"),
    )

    response = admin_client.get(reverse(CHANGELIST))

    html = response.content.decode()
    for field in ("price", "stock", "is_active"):
        assert f'name="form-0-{field}"' in html, field
    assert 'class="field-created"' in html
    assert 'class="field-sku"' in html
    # Long text is shortened, the whole of it in the tooltip.
    assert (
        '<span title="Handy steel widget with a very long descriptive name">'
        "Handy steel widget with a v…</span>"
    ) in html
    # The stylesheet that narrows the columns is linked and can be served.
    assert f'href="/static/{CHANGELIST_CSS}"' in html
    assert finders.find(CHANGELIST_CSS)
    # No app navigation sidebar taking 275 px of the width.
    assert 'id="nav-sidebar"' not in html


def test_view_site_links_to_the_api_docs(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert f'<a href="{reverse("docs")}">View site</a>' in response.content.decode()
    assert admin_client.get(reverse("docs")).status_code == 200


def test_a_filter_no_row_can_match_lists_nothing(admin_client):
    # Beyond bigint: Django compiles no SQL for it (EmptyResultSet); the
    # count must still be 0, not an error.
    ProductFactory()
    response = admin_client.get(reverse(CHANGELIST), {"id__exact": "9" * 20})
    assert response.status_code == 200
    assert b"0 products" in response.content
