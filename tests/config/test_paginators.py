import pytest

from catalog.models import Product
from config import paginators
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def analysed_products(django_db_blocker):
    ProductFactory.create_batch(30, stock=5)
    ProductFactory.create_batch(10, stock=0)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")


def test_small_results_are_counted_exactly(analysed_products):
    assert paginators.fast_count(Product.objects.all()) == 40
    assert paginators.fast_count(Product.objects.filter(stock=0)) == 10


def test_big_results_use_the_planner_estimate(analysed_products, monkeypatch):
    monkeypatch.setattr(paginators, "EXACT_COUNT_THRESHOLD", 1)
    assert paginators.fast_count(Product.objects.all()) == 40
    estimate = paginators.fast_count(Product.objects.filter(stock__gt=0))
    assert 1 <= estimate <= 40


def test_estimated_paginator_counts_a_filtered_queryset_without_count_star(
    analysed_products, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr(paginators, "EXACT_COUNT_THRESHOLD", 1)
    paginator = paginators.EstimatedCountPaginator(
        Product.objects.filter(stock__gt=0).order_by("pk"), 10
    )
    with django_assert_num_queries(1) as captured:
        assert paginator.count >= 1
    assert captured.captured_queries[0]["sql"].startswith("EXPLAIN")


def test_plan_estimates_are_reused_for_a_while(
    analysed_products, monkeypatch, django_assert_num_queries
):
    query = Product.objects.filter(stock__gte=3)
    with django_assert_num_queries(1):
        first = paginators.planned_row_count(query)
    with django_assert_num_queries(0):
        assert paginators.planned_row_count(query) == first
    with django_assert_num_queries(1):  # other parameters: their own plan
        paginators.planned_row_count(Product.objects.filter(stock__gte=4))
    monkeypatch.setattr(paginators, "PLAN_ESTIMATE_SECONDS", -1.0)
    with django_assert_num_queries(1):
        paginators.planned_row_count(Product.objects.filter(stock__gte=5))
    with django_assert_num_queries(1):  # expired at once: planned again
        paginators.planned_row_count(Product.objects.filter(stock__gte=5))
