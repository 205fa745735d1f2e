from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from decimal import Decimal
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from accounts.models import User
from catalog.models import Category, Product
from catalog.services import (
    MSG_NO_SLUG_IN_NAME,
    category_slug_from,
    category_slug_taken_message,
)
from catalog.validation import (
    NAME_MAX_LENGTH,
    PRICE_DECIMAL_PLACES,
    PRICE_MAX,
    PRICE_MAX_DIGITS,
    PRODUCT_DEFAULTS,
    PRODUCT_FIELDS,
    SKU_MAX_LENGTH,
    SLUG_MAX_LENGTH,
    category_missing_message,
    clean_product,
)
from config.cache.namespaces import NAMESPACE_CATEGORIES, NamespaceMemo


class CategoryRefSerializer(serializers.ModelSerializer[Category]):
    """A category as embedded in a product."""

    class Meta:
        model = Category
        fields = ["id", "name", "slug"]
        read_only_fields = fields


class OwnerSerializer(serializers.ModelSerializer[User]):
    """A product's owner as embedded in a product (no email)."""

    class Meta:
        model = User
        fields = ["id", "username"]
        read_only_fields = fields


class CategorySerializer(serializers.ModelSerializer[Category]):
    """A category with the number of its active products; slug defaults from name."""

    slug = serializers.SlugField(
        max_length=100,
        required=False,
        help_text="Unique; derived from the name when left out.",
    )
    product_count = serializers.IntegerField(
        read_only=True,
        help_text="Active products in the category: exact up to 1,000, "
        "PostgreSQL's statistics estimate beyond.",
    )

    class Meta:
        model = Category
        fields = ["id", "name", "slug", "product_count", "created_at", "updated_at"]
        read_only_fields = ["id", "product_count", "created_at", "updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A slug derived from the name is the name's problem: the errors go on
        # the field the client sent.
        field, slug = "slug", attrs.get("slug")
        if not slug and "name" in attrs and self.instance is None:
            field, slug = "name", category_slug_from(attrs["name"])
            if not slug:
                raise serializers.ValidationError({"name": [MSG_NO_SLUG_IN_NAME]})
        if slug:
            taken = Category.objects.filter(slug=slug)
            if self.instance is not None:
                taken = taken.exclude(pk=self.instance.pk)
            if taken.exists():
                message = category_slug_taken_message(slug, derived=field == "name")
                raise serializers.ValidationError({field: [message]})
        return attrs


class ProductSerializer(serializers.ModelSerializer[Product]):
    """A product as read: category and owner embedded."""

    category = CategoryRefSerializer(read_only=True)
    owner = OwnerSerializer(read_only=True)

    class Meta:
        model = Product
        fields = ["id", *PRODUCT_FIELDS, "owner", "created_at", "updated_at"]
        read_only_fields = fields

    def to_representation(self, instance: Product) -> dict[str, Any]:
        return product_representation(instance)


_PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)


def iso_datetime(value: Any, zone: tzinfo) -> str:
    """Return *value* as DRF's DateTimeField shows it in *zone* (ISO 8601, "Z")."""
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def product_representation(product: Product) -> dict[str, Any]:
    """Return *product* (loaded by ``for_api()``) as ProductSerializer declares it."""
    category = product.category
    owner = product.owner
    return product_row_representation(
        (
            product.pk,
            product.sku,
            product.name,
            product.slug,
            product.description,
            product.price,
            product.stock,
            product.is_active,
            product.created_at,
            product.updated_at,
            category.pk,
            category.name,
            category.slug,
            owner.pk,
            owner.username,
        )
    )


def product_rows_representation(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """Return products' ``API_VALUES`` *rows* as ProductSerializer declares them."""
    # The current time zone once per page, not twice per row.
    zone = timezone.get_current_timezone()
    return [product_row_representation(row, zone) for row in rows]


def product_row_representation(
    row: Sequence[Any], zone: tzinfo | None = None
) -> dict[str, Any]:
    """Return a product's ``API_VALUES`` *row* as ProductSerializer declares it.

    Built directly: DRF's per-field machinery (attribute lookup, nested
    serializers, ordered dicts) cost more than the database read on an
    uncached product page. A test compares both with the declared fields.
    *zone* is the current time zone (looked up when not given).
    """
    zone = zone or timezone.get_current_timezone()
    (pk, sku, name, slug, description, price, stock, is_active, created_at,
     updated_at, category_id, category_name, category_slug, owner_id,
     owner_username) = row  # fmt: skip
    if not isinstance(price, Decimal):
        price = Decimal(str(price))
    return {
        "id": pk,
        "sku": sku,
        "name": name,
        "slug": slug,
        "description": description,
        "price": f"{price.quantize(_PRICE_QUANTUM):f}",
        "stock": stock,
        "is_active": is_active,
        "category": {"id": category_id, "name": category_name, "slug": category_slug},
        "owner": {"id": owner_id, "username": owner_username},
        "created_at": iso_datetime(created_at, zone),
        "updated_at": iso_datetime(updated_at, zone),
    }


# Categories are few and rarely written: a write names one without a query
# while the categories namespace keeps its version. One deleted meanwhile
# fails the foreign key, reported on `category` (catalog.services).
_categories = NamespaceMemo(NAMESPACE_CATEGORIES, maxsize=1_000)


def _category(pk: int) -> Category | None:
    return Category.objects.only("id", "name", "slug").filter(pk=pk).first()


def known_category(pk: int) -> Category | None:
    """Return category *pk* (id, name, slug) from this process's memo, or None."""
    return _categories.get(pk, functools.partial(_category, pk))


class ProductWriteSerializer(serializers.Serializer):
    """A product as written: the category by id; the rules of catalog.validation.

    The declared fields document the shape; validation itself is
    ``clean_product``, the code the bulk endpoints and imports run too.
    """

    sku = serializers.CharField(
        max_length=SKU_MAX_LENGTH,
        help_text=f"1-{SKU_MAX_LENGTH} of letters, digits, '.', '_', '-'; unique.",
    )
    name = serializers.CharField(max_length=NAME_MAX_LENGTH)
    slug = serializers.SlugField(
        max_length=SLUG_MAX_LENGTH,
        required=False,
        help_text="Derived from the name when left out.",
    )
    description = serializers.CharField(required=False, allow_blank=True)
    price = serializers.DecimalField(
        max_digits=PRICE_MAX_DIGITS,
        decimal_places=PRICE_DECIMAL_PLACES,
        min_value=0,
        max_value=PRICE_MAX,
    )
    stock = serializers.IntegerField(
        required=False, min_value=0, default=PRODUCT_DEFAULTS["stock"]
    )
    is_active = serializers.BooleanField(
        required=False, default=PRODUCT_DEFAULTS["is_active"]
    )
    category = serializers.IntegerField(help_text="Category id.")

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        cleaned, errors = clean_product(data, partial=self.partial)
        if errors:
            raise serializers.ValidationError(errors)
        if "category_id" in cleaned:
            pk = cleaned.pop("category_id")
            category = known_category(pk)
            if category is None:
                raise serializers.ValidationError(
                    {"category": [category_missing_message(pk)]}
                )
            cleaned["category"] = category
        return cleaned

    def run_validators(self, value: Any) -> None:
        # No validator is declared on the serializer: DRF would still build
        # every field (a deep copy of the declared ones) to merge read-only
        # defaults for them, which to_internal_value never needs.
        if self.validators:
            super().run_validators(value)


class ProductBulkUpdateItemSerializer(ProductWriteSerializer):
    """One item of a bulk update: the product id and only the fields to change."""

    id = serializers.IntegerField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for name, field in fields.items():
            if name != "id":
                field.required = False
        return fields


class BulkDeleteSerializer(serializers.Serializer):
    """Body of a bulk delete."""

    ids = serializers.ListField(
        child=serializers.IntegerField(), min_length=1, max_length=1000
    )


class BulkCreateResultSerializer(serializers.Serializer):
    """Answer of a bulk create."""

    created = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())


class BulkUpdateResultSerializer(serializers.Serializer):
    """Answer of a bulk update."""

    updated = serializers.IntegerField()


class BulkDeleteResultSerializer(serializers.Serializer):
    """Answer of a bulk delete."""

    deleted = serializers.IntegerField()
