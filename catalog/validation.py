"""One place for the rules of a product payload, shared by the API, bulk and imports.

Pure Python: no database query, so it can run for every item of a bulk request
and every row of a million-row import. What needs the database (the category
exists, the SKU is not taken) is checked by the callers in one query per batch.

Values may arrive typed (JSON) or as strings (CSV): ``"19.90"``, ``"5"``,
``"true"`` and ``"3"`` are accepted for price, stock, is_active and category.
An empty string in an optional field (slug, stock, is_active) counts as absent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.text import slugify

from accounts.validation import MSG_EMAIL, normalize_email
from catalog.fields import PRODUCT_FIELDS, PRODUCT_OPTIONAL
from catalog.models import SKU_VALIDATOR, Category, Product
from config.validation import (
    MSG_BLANK,
    MSG_NULL,
    MSG_NULL_CHARACTERS,
    MSG_REQUIRED,
    MSG_STRING,
    clean_bool,
    max_length_message,
)

PRODUCT_COLUMNS = tuple(Product._meta.get_field(f).attname for f in PRODUCT_FIELDS)
# The columns of import and export files: the category by slug, the owner by
# email, so that an exported file imports back unchanged.
PRODUCT_FILE_COLUMNS = (*PRODUCT_FIELDS, "owner")
PRODUCT_REQUIRED = tuple(f for f in PRODUCT_FIELDS if f not in PRODUCT_OPTIONAL)
PRODUCT_DEFAULTS: dict[str, Any] = {
    f: Product._meta.get_field(f).get_default() for f in PRODUCT_OPTIONAL
}
# Optional fields where "" (an empty CSV cell) means "not given".
BLANK_IS_ABSENT = frozenset({"slug", "stock", "is_active"})

SKU_MAX_LENGTH = Product._meta.get_field("sku").max_length
NAME_MAX_LENGTH = Product._meta.get_field("name").max_length
SLUG_MAX_LENGTH = Product._meta.get_field("slug").max_length
PRICE_MAX_DIGITS = Product._meta.get_field("price").max_digits
PRICE_DECIMAL_PLACES = Product._meta.get_field("price").decimal_places
_CENT = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)
# max_digits=12 with 2 places leaves 10 whole digits.
PRICE_MAX = Decimal(10 ** (PRICE_MAX_DIGITS - PRICE_DECIMAL_PLACES)) - _CENT
INT4_MAX = 2**31 - 1
CATEGORY_NAME_MAX_LENGTH = Category._meta.get_field("name").max_length
CATEGORY_SLUG_MAX_LENGTH = Category._meta.get_field("slug").max_length

# The rules of the CHECK constraints and the SKU validator, word for word.
MSG_SKU = str(SKU_VALIDATOR.message)
MSG_PRICE_MIN = "Price must be greater than or equal to 0."
MSG_STOCK_MIN = "Stock must be greater than or equal to 0."
MSG_NUMBER = "A valid number is required."
MSG_PLACES = (
    f"Ensure that there are no more than {PRICE_DECIMAL_PLACES} decimal places."
)
MSG_PRICE_MAX = f"Ensure this value is less than or equal to {PRICE_MAX}."
MSG_INTEGER = "A valid integer is required."
MSG_STOCK_MAX = f"Ensure this value is less than or equal to {INT4_MAX}."
MSG_SLUG = (
    "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens."
)
MSG_SKU_TAKEN = "product with this SKU already exists."

# The validator's regex is a lazy proxy: each attribute access through it costs
# more than the match itself, once per row of an import.
_SKU_MATCH = re.compile(SKU_VALIDATOR.regex.pattern, SKU_VALIDATOR.regex.flags).match
_SLUG_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
)
_PRICE_TYPES = (int, float, str)


def category_missing_message(pk: Any) -> str:
    """Return the error for a category id that names no row (DRF's wording)."""
    return f'Invalid pk "{pk}" - object does not exist.'


def clean_sku(value: Any) -> tuple[str | None, str | None]:
    """Return (sku, error) for one SKU value."""
    if not isinstance(value, str):
        return None, MSG_STRING
    sku = value.strip()
    if not sku:
        return None, MSG_BLANK
    if not _SKU_MATCH(sku):
        return None, MSG_SKU
    return sku, None


def clean_price(value: Any) -> tuple[Decimal | None, str | None]:
    """Return (price, error) for one price value: a decimal with two places."""
    if isinstance(value, bool):
        return None, MSG_NUMBER
    if isinstance(value, Decimal):
        price = value
    elif isinstance(value, _PRICE_TYPES):
        try:
            price = Decimal(value.strip() if isinstance(value, str) else str(value))
        except InvalidOperation:
            return None, MSG_NUMBER
    else:
        return None, MSG_NUMBER
    if not price.is_finite():
        return None, MSG_NUMBER
    if price < 0:
        return None, MSG_PRICE_MIN
    if price > PRICE_MAX:
        return None, MSG_PRICE_MAX
    rounded = price.quantize(_CENT)
    # "19.90" and "19.900" are the same amount; "19.999" is not a price.
    if rounded != price:
        return None, MSG_PLACES
    return rounded, None


def clean_stock(value: Any) -> tuple[int | None, str | None]:
    """Return (stock, error) for one stock value: an int4 >= 0."""
    if isinstance(value, bool):
        return None, MSG_INTEGER
    if isinstance(value, int):
        stock = value
    elif isinstance(value, float):
        if not value.is_integer():
            return None, MSG_INTEGER
        stock = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdecimal() or len(text) > 20:
            return None, MSG_INTEGER
        stock = int(text)
    else:
        return None, MSG_INTEGER
    if stock < 0:
        return None, MSG_STOCK_MIN
    if stock > INT4_MAX:
        return None, MSG_STOCK_MAX
    return stock, None


def clean_pk(value: Any) -> tuple[int | None, str | None]:
    """Return (id, error) for a primary key given as an int or digits."""
    if isinstance(value, bool):
        return (
            None,
            f"Incorrect type. Expected pk value, received {type(value).__name__}.",
        )
    if isinstance(value, int):
        pk = value
    elif isinstance(value, str) and value.strip().isdecimal() and len(value) < 20:
        pk = int(value)
    else:
        return (
            None,
            f"Incorrect type. Expected pk value, received {type(value).__name__}.",
        )
    if pk < 1 or pk > 2**63 - 1:
        return None, category_missing_message(value)
    return pk, None


def _clean_name(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, MSG_STRING
    name = value.strip()
    if not name:
        return None, MSG_BLANK
    if len(name) > NAME_MAX_LENGTH:
        return None, max_length_message(NAME_MAX_LENGTH)
    return name, None


def _clean_slug(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, MSG_STRING
    slug = value.strip()
    if len(slug) > SLUG_MAX_LENGTH:
        return None, max_length_message(SLUG_MAX_LENGTH)
    if not _SLUG_CHARS.issuperset(slug):
        return None, MSG_SLUG
    return slug, None


def _clean_description(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, MSG_STRING
    if "\x00" in value:
        return None, MSG_NULL_CHARACTERS
    return value, None


_CLEANERS = {
    "sku": clean_sku,
    "name": _clean_name,
    "description": _clean_description,
    "price": clean_price,
    "stock": clean_stock,
    "is_active": clean_bool,
}


def clean_product(
    data: Mapping[str, Any], *, partial: bool = False
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Return (cleaned values, field errors) for one product payload.

    Only the keys of ``PRODUCT_FIELDS`` are read; any other key (``id``,
    ``owner``...) is ignored. Cleaned keys are model attribute names, so
    ``category`` comes back as ``category_id`` and the result can be passed to
    ``Product(**cleaned)``. On create (``partial=False``) sku, name, price and
    category are required, description, stock and is_active get their model
    defaults, and a missing slug is ``slugify(name)``. With ``partial=True`` only
    the keys present are checked and returned (a blank slug sent next to a name
    is derived from it). Errors use DRF's field-error shape and the database
    constraints' messages.
    """
    if not isinstance(data, Mapping):
        return {}, {
            "non_field_errors": [
                f"Invalid data. Expected a dictionary, but got {type(data).__name__}."
            ]
        }
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}

    for field, cleaner in _CLEANERS.items():
        if field in data:
            value = data[field]
            if value is None:
                errors[field] = [MSG_NULL]
                continue
            if value == "" and field in BLANK_IS_ABSENT:
                if not partial:
                    cleaned[field] = PRODUCT_DEFAULTS[field]
                continue
            result, error = cleaner(value)
            if error is None:
                cleaned[field] = result
            else:
                errors[field] = [error]
        elif not partial:
            if field in PRODUCT_DEFAULTS:
                cleaned[field] = PRODUCT_DEFAULTS[field]
            else:
                errors[field] = [MSG_REQUIRED]

    if "category" in data:
        value = data["category"]
        if value is None:
            errors["category"] = [MSG_NULL]
        else:
            pk, error = clean_pk(value)
            if error is None:
                cleaned["category_id"] = pk
            else:
                errors["category"] = [error]
    elif not partial:
        errors["category"] = [MSG_REQUIRED]

    slug = data.get("slug")
    if slug is not None and slug != "":
        value, error = _clean_slug(slug)
        if error is None:
            cleaned["slug"] = value
        else:
            errors["slug"] = [error]
    elif "name" in cleaned and (not partial or "slug" in data):
        cleaned["slug"] = slugify(cleaned["name"])[:SLUG_MAX_LENGTH]
    elif not partial and "name" not in errors:
        cleaned["slug"] = ""

    return cleaned, errors


_CATEGORY_SLUG = Category._meta.get_field("slug")


def clean_category_slug(value: Any) -> tuple[str | None, str | None]:
    """Return (slug, error) for a category named by its slug (import files)."""
    if value is None:
        return None, MSG_REQUIRED
    if not isinstance(value, str):
        return None, "Must be a category slug."
    slug = value.strip()
    if not slug:
        return None, MSG_BLANK
    try:
        _CATEGORY_SLUG.run_validators(slug)
    except ValidationError as exc:
        return None, " ".join(exc.messages)
    return slug, None


def clean_owner_email(value: Any) -> tuple[str | None, str | None]:
    """Return (lower-case email, error) for an owner named by email (import files)."""
    if value is None or value == "":
        return None, "This field is required (or pass --owner)."
    if not isinstance(value, str):
        return None, MSG_EMAIL
    email = normalize_email(value)
    try:
        validate_email(email)
    except ValidationError:
        return None, MSG_EMAIL
    return email.lower(), None
