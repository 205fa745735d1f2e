import pytest
from django.db import connection

from catalog.models import Product
from config import counting
from config.lru import LRU
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_plan_estimates(monkeypatch):
    """Forget plan estimates other tests' data left behind."""
    monkeypatch.setattr(counting, "_plan_estimates", LRU(maxsize=512))


@pytest.fixture
def stale_statistics():
    """Analyse 40 products (30 in stock), then delete 20 in-stock ones unseen.

    The statistics still say 40 rows, 30 in stock; the table holds 20 and 10.
    """
    in_stock = ProductFactory.create_batch(30, stock=5)
    ProductFactory.create_batch(10, stock=0)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
    Product.objects.filter(pk__in=[p.pk for p in in_stock[:20]]).delete()
    assert counting.estimated_row_count(Product) == 40
    assert counting.planned_row_count(Product.objects.filter(stock__gt=0)) > 20


def test_counts_up_to_the_threshold_are_exact_whatever_the_estimate(stale_statistics):
    assert counting.count_rows(Product.objects.all()) == 20
    assert counting.count_rows(Product.objects.filter(stock__gt=0)) == 10


def test_counts_beyond_the_threshold_are_the_estimate(stale_statistics, monkeypatch):
    monkeypatch.setattr(counting, "COUNT_EXACT_UP_TO", 5)
    assert counting.count_rows(Product.objects.all()) == 40
    in_stock = Product.objects.filter(stock__gt=0)
    assert counting.count_rows(in_stock) == counting.planned_row_count(in_stock) > 20


def test_an_estimate_below_the_threshold_is_raised_to_it(monkeypatch):
    monkeypatch.setattr(counting, "COUNT_EXACT_UP_TO", 5)
    ProductFactory.create_batch(20, stock=5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
    ProductFactory.create_batch(8, stock=7)  # unseen by the statistics
    sevens = Product.objects.filter(stock=7)
    assert counting.planned_row_count(sevens) < 6
    assert counting.count_rows(sevens) == 6


def test_admin_paginator_counts_by_the_rule_without_count_star(
    stale_statistics, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr(counting, "COUNT_EXACT_UP_TO", 5)
    in_stock = Product.objects.filter(stock__gte=1).order_by("pk")
    paginator = counting.EstimatedCountPaginator(in_stock, 10)
    with django_assert_num_queries(2) as captured:
        assert paginator.count > 20
    capped, explain = (q["sql"] for q in captured.captured_queries)
    assert capped.startswith("SELECT COUNT(*)") and "LIMIT 6" in capped
    assert explain.startswith("EXPLAIN")


def test_plan_estimates_are_reused_for_a_while(
    stale_statistics, monkeypatch, django_assert_num_queries
):
    query = Product.objects.filter(stock__gte=3)
    with django_assert_num_queries(1):
        first = counting.planned_row_count(query)
    with django_assert_num_queries(0):
        assert counting.planned_row_count(query) == first
    with django_assert_num_queries(1):  # other parameters: their own plan
        counting.planned_row_count(Product.objects.filter(stock__gte=4))
    monkeypatch.setattr(counting, "PLAN_ESTIMATE_SECONDS", -1.0)
    with django_assert_num_queries(1):
        counting.planned_row_count(Product.objects.filter(stock__gte=5))
    with django_assert_num_queries(1):  # expired at once: planned again
        counting.planned_row_count(Product.objects.filter(stock__gte=5))
