"""Which cached reads a catalog write invalidates, and what each read depends on.

A product's detail depends on that product alone (plus the category and owner
fields it embeds), so writing one product leaves every other detail cached.
Lists and counts depend on every product row: any product write bumps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from config.cache.namespaces import (
    NAMESPACE_CATEGORIES,
    NAMESPACE_OWNERS,
    NAMESPACE_PRODUCTS,
    NAMESPACE_USERS,
    object_namespace,
)

PRODUCT = "product"
EVERY_PRODUCT = object_namespace(PRODUCT)

CATEGORY_READS = (NAMESPACE_CATEGORIES, NAMESPACE_PRODUCTS)  # counts of products
PRODUCT_LIST_READS = (NAMESPACE_CATEGORIES, NAMESPACE_PRODUCTS, NAMESPACE_OWNERS)
DASHBOARD_READS = (NAMESPACE_CATEGORIES, NAMESPACE_PRODUCTS, NAMESPACE_USERS)
CATEGORY_WRITES = (NAMESPACE_CATEGORIES,)


def product_detail_reads(pk: Any) -> tuple[str, ...]:
    """Return the namespaces the detail of product *pk* depends on."""
    # The number, not its spelling: /products/012/ shows product 12 too.
    # Anything but ASCII digits is a 404, which shares one name.
    text = str(pk)
    canonical = text.isascii() and text.isdigit() and len(text) <= 18
    own = object_namespace(PRODUCT, int(text) if canonical else "none")
    return (NAMESPACE_CATEGORIES, NAMESPACE_OWNERS, EVERY_PRODUCT, own)


def product_writes(
    *, pks: Iterable[Any] | None = None, created: bool = False
) -> tuple[str, ...]:
    """Return the namespaces a write of products invalidates.

    Inserts change lists and counts only (no detail of a new id was cached);
    a write of the rows *pks* also their details; a write of rows not known
    (None) every product's detail.
    """
    if created:
        return (NAMESPACE_PRODUCTS,)
    if pks is None:
        return (NAMESPACE_PRODUCTS, EVERY_PRODUCT)
    return (NAMESPACE_PRODUCTS, *(object_namespace(PRODUCT, pk) for pk in set(pks)))
