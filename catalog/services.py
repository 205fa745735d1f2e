from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet

from catalog.models import Product


@transaction.atomic
def products_set_active(*, products: QuerySet[Product], active: bool) -> int:
    """Put *products* on sale or take them off, in one statement."""
    return products.exclude(is_active=active).update(is_active=active)
