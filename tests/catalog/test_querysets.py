from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from catalog.models import Product
from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db


def _indexes(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table]
        )
        return dict(cursor.fetchall())


def _constraints(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass",
            [table],
        )
        return dict(cursor.fetchall())


def test_user_indexes_of_the_original_design_exist():
    indexes = _indexes("accounts_user")
    assert "(email, is_active)" in indexes["accounts_user_email_active"]
    assert "(username, is_active)" in indexes["accounts_user_username_active"]
    assert "(created_at DESC)" in indexes["accounts_user_created_desc"]
    assert "lower((email)::text)" in indexes["accounts_user_email_ci_unique"]
    assert "UNIQUE" in indexes["accounts_user_email_ci_unique"]


def test_product_indexes_serve_filters_orderings_and_search():
    indexes = _indexes("catalog_product")
    assert (
        "(category_id, is_active, created_at DESC, id DESC)"
        in indexes["catalog_product_cat_new"]
    )
    assert (
        "(is_active, created_at DESC, id DESC)" in indexes["catalog_product_active_new"]
    )
    assert "(price, id)" in indexes["catalog_product_price"]
    assert "(stock, id) WHERE is_active" in indexes["catalog_product_low_stock"]
    assert "gin (search_document)" in indexes["catalog_product_search"]
    assert "upper((sku)::text) text_pattern_ops" in indexes["catalog_product_sku_upper"]


def test_product_check_constraints_exist():
    constraints = _constraints("catalog_product")
    assert "price >= " in constraints["catalog_product_price_gte_0"]
    assert "stock >= " in constraints["catalog_product_stock_gte_0"]


def test_database_rejects_negative_price_written_with_queryset_update():
    product = ProductFactory(price=Decimal("5.00"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=product.pk).update(price=Decimal("-0.01"))
    product.refresh_from_db()
    assert product.price == Decimal("5.00")


def test_database_rejects_negative_stock_written_with_queryset_update():
    product = ProductFactory(stock=3)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=product.pk).update(stock=-1)


def test_database_rejects_same_email_in_other_letter_case():
    UserFactory(email="Ada@Example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        UserFactory(email="ada@example.COM")


def test_visible_to_hides_inactive_products_from_non_staff():
    active = ProductFactory()
    inactive = ProductFactory(is_active=False)
    staff = UserFactory(staff=True)
    visitor = UserFactory()
    assert set(Product.objects.visible_to(staff)) == {active, inactive}
    assert set(Product.objects.visible_to(visitor)) == {active}
    assert set(Product.objects.visible_to(None)) == {active}
