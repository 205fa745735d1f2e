"""Cache invalidation for saves and deletes (admin forms, plain ORM, cascades).

A product delete bumps from ``Product.delete()``, so that bulk deletes stay one
statement (a delete receiver makes Django load and signal every row).
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from catalog.invalidation import CATEGORY_WRITES, product_writes
from catalog.models import Category, Product
from config.cache.namespaces import bump_on_commit


@receiver(post_save, sender=Category, dispatch_uid="catalog_category_saved")
@receiver(post_delete, sender=Category, dispatch_uid="catalog_category_deleted")
def category_changed(sender: type, using: str, **kwargs: Any) -> None:
    """Refresh cached category reads (and products showing them) once this commits."""
    bump_on_commit(*CATEGORY_WRITES, using=using)


@receiver(post_save, sender=Product, dispatch_uid="catalog_product_saved")
def product_changed(
    sender: type, instance: Product, using: str, created: bool = False, **kwargs: Any
) -> None:
    """Refresh this product's cached reads and every list once the write commits."""
    bump_on_commit(*product_writes(pks=[instance.pk], created=created), using=using)
