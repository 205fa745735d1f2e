from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django_filters import filters as base_filters
from django_filters import rest_framework as filters

from catalog.managers import ProductQuerySet
from catalog.models import Product

# Public ordering names -> model field; each list ends on the unique id, so
# pages are deterministic and cursor paging has a unique key.
ORDERINGS = {"price": "price", "created_at": "created_at", "name": "name"}
DEFAULT_ORDERING = ("-created_at", "-id")
# A SKU prefix of one or two characters is a range over much of the SKU
# index, and such a term is rarely a word: ask for three in a row.
_SEARCHABLE = re.compile(r"\w{3}")
MSG_SEARCH_TOO_SHORT = "Search for at least 3 letters or digits in a row."
MSG_NOT_A_BOOLEAN = "Must be true or false (or 1 or 0)."
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def validate_search(value: str) -> None:
    """Reject a search that no index can serve (e.g. ``ab`` or ``-``)."""
    if value.strip() and not _SEARCHABLE.search(value):
        raise ValidationError(MSG_SEARCH_TOO_SHORT)


class StrictBooleanField(forms.Field):
    """A query-string boolean: true/false/1/0 (any case); anything else is invalid."""

    def to_python(self, value: Any) -> bool | None:
        if value is None or value == "":
            return None
        try:
            return _BOOLEANS[str(value).strip().lower()]
        except KeyError:
            raise ValidationError(MSG_NOT_A_BOOLEAN, code="invalid") from None


class StrictBooleanFilter(base_filters.BooleanFilter):
    """A boolean filter that answers 400 on a value it cannot read, not ignore it."""

    field_class = StrictBooleanField


def ordering_terms(value: str | None) -> tuple[str, ...]:
    """Return ORDER BY terms for an ``ordering`` value, ignoring unknown names."""
    for raw in (value or "").split(","):
        name = raw.strip()
        descending = name.startswith("-")
        field = ORDERINGS.get(name.lstrip("-"))
        if field:
            sign = "-" if descending else ""
            return (f"{sign}{field}", f"{sign}id")
    return DEFAULT_ORDERING


class ProductFilterSet(filters.FilterSet):
    """Filters of GET /products/: category, price range, stock, search, ordering."""

    category = filters.CharFilter(
        method="filter_category", help_text="Category id or slug."
    )
    min_price = filters.NumberFilter(field_name="price", lookup_expr="gte")
    max_price = filters.NumberFilter(field_name="price", lookup_expr="lte")
    in_stock = StrictBooleanFilter(
        method="filter_in_stock", help_text="true: stock > 0; false: stock = 0."
    )
    is_active = StrictBooleanFilter(
        method="filter_is_active", help_text="Staff only; ignored for others."
    )
    search = filters.CharFilter(
        method="filter_search",
        validators=[validate_search],
        help_text="English full-text search of name and description (web-search "
        'syntax: words, "a phrase", -word, or) or a SKU prefix, any case. '
        "Needs 3 letters or digits in a row.",
    )
    ordering = filters.CharFilter(
        method="filter_ordering",
        help_text="price, created_at or name; prefix '-' for descending. "
        "Anything else is ignored (newest first).",
    )

    class Meta:
        model = Product
        fields = [
            "category",
            "min_price",
            "max_price",
            "in_stock",
            "is_active",
            "search",
            "ordering",
        ]

    def filter_queryset(self, queryset: ProductQuerySet) -> ProductQuerySet:
        queryset = super().filter_queryset(queryset)
        # Ordering applies when the parameter is absent too (newest first).
        terms = ordering_terms(self.form.cleaned_data["ordering"])
        if (self.form.cleaned_data.get("search") or "").strip():
            return queryset.order_search_by(*terms)
        return queryset.order_by(*terms)

    def filter_category(
        self, queryset: ProductQuerySet, name: str, value: str
    ) -> ProductQuerySet:
        value = value.strip()
        # A number is an id; slugs made only of digits are not addressable here.
        if value.isdecimal() and len(value) < 19:
            return queryset.filter(category_id=int(value))
        return queryset.filter(category__slug=value)

    def filter_in_stock(
        self, queryset: ProductQuerySet, name: str, value: bool
    ) -> ProductQuerySet:
        return queryset.filter(stock__gt=0) if value else queryset.filter(stock=0)

    def filter_is_active(
        self, queryset: ProductQuerySet, name: str, value: bool
    ) -> ProductQuerySet:
        user = getattr(self.request, "user", None)
        if user is None or not user.is_staff:
            return queryset
        return queryset.filter(is_active=value)

    def filter_search(
        self, queryset: ProductQuerySet, name: str, value: str
    ) -> ProductQuerySet:
        return queryset.search(value)

    def filter_ordering(
        self, queryset: ProductQuerySet, name: str, value: str
    ) -> ProductQuerySet:
        # Applied by filter_queryset, absent or not.
        return queryset
