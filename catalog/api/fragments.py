"""Products' list items as cached JSON fragments (``config.cache.fragments``).

A product's item in a list is the JSON of its detail: ``product_rows_representation``
rendered by the API's JSON renderer. It depends on what the product's detail
depends on (``product_detail_reads``), so writes invalidate it as they
invalidate the detail.
"""

from __future__ import annotations

from collections.abc import Sequence

from rest_framework.renderers import JSONRenderer

from catalog.api.serializers import product_rows_representation
from catalog.invalidation import product_detail_reads
from catalog.models import Product
from config.cache.fragments import Fragments

_renderer = JSONRenderer()


def render_products(pks: Sequence[int]) -> dict[int, bytes]:
    """Return the JSON of products *pks* (those that still exist), by id."""
    rows = Product.objects.api_rows(pks)
    items = product_rows_representation(rows)
    return {
        row[0]: _renderer.render(item) for row, item in zip(rows, items, strict=True)
    }


product_fragments = Fragments("product", product_detail_reads, render_products)
