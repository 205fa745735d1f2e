"""Cache invalidation for saves and deletes (admin forms, plain ORM, cascades)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from catalog.models import Category, Product
from config.cache import NAMESPACE_CATALOG, bump_on_commit


@receiver(post_save, sender=Category, dispatch_uid="catalog_category_saved")
@receiver(post_delete, sender=Category, dispatch_uid="catalog_category_deleted")
@receiver(post_save, sender=Product, dispatch_uid="catalog_product_saved")
@receiver(post_delete, sender=Product, dispatch_uid="catalog_product_deleted")
def catalog_changed(sender: type, using: str, **kwargs: Any) -> None:
    """Refresh cached catalog reads once the write commits."""
    bump_on_commit(NAMESPACE_CATALOG, using=using)
