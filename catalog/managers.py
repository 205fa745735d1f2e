from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models

from config.cache import NAMESPACE_CATALOG, InvalidatingQuerySetMixin

if TYPE_CHECKING:
    from accounts.models import User


class CategoryQuerySet(InvalidatingQuerySetMixin, models.QuerySet["Category"]):
    cache_namespaces = (NAMESPACE_CATALOG,)

    def with_product_counts(self) -> CategoryQuerySet:
        """Annotate each category with the number of its active products."""
        return self.annotate(
            product_count=models.Count(
                "products", filter=models.Q(products__is_active=True)
            )
        )


class ProductQuerySet(InvalidatingQuerySetMixin, models.QuerySet["Product"]):
    cache_namespaces = (NAMESPACE_CATALOG,)

    def active(self) -> ProductQuerySet:
        """Return products on sale."""
        return self.filter(is_active=True)

    def visible_to(self, user: User | None) -> ProductQuerySet:
        """Return products *user* may see: all for staff, active ones for others."""
        if user is not None and user.is_authenticated and user.is_staff:
            return self
        return self.active()

    def for_admin(self) -> ProductQuerySet:
        """Return products with what the admin changelist shows, joined in one query."""
        return self.select_related("category", "owner")


CategoryManager = models.Manager.from_queryset(CategoryQuerySet)
ProductManager = models.Manager.from_queryset(ProductQuerySet)
