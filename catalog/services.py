from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError, QuerySet
from django.db.models.functions import Now
from django.utils.text import slugify

from catalog.invalidation import CATEGORY_WRITES, product_writes
from catalog.models import Category, Product
from catalog.validation import (
    CATEGORY_NAME_MAX_LENGTH,
    CATEGORY_SLUG_MAX_LENGTH,
    MSG_SKU_TAKEN,
    PRODUCT_COLUMNS,
    PRODUCT_DEFAULTS,
    PRODUCT_OPTIONAL,
    SLUG_MAX_LENGTH,
    category_missing_message,
    clean_pk,
    clean_product,
)
from config.bulkio import UpsertResult
from config.cache import bump_on_commit
from config.indexes import check_constraints_now
from config.upsert import (
    MergeTarget,
    copy_new,
    insert_missing,
    may_skip_triggers_sql,
    staged_merge,
)
from config.validation import MSG_REQUIRED, ItemErrorList, ItemErrors

if TYPE_CHECKING:
    from accounts.models import User

FOREIGN_KEY_VIOLATION = "23503"


@transaction.atomic
def products_set_active(*, products: QuerySet[Product], active: bool) -> int:
    """Put *products* on sale or take them off, in one statement."""
    return products.exclude(is_active=active).update(is_active=active, updated_at=Now())


CONCURRENT_CONFLICT = (
    "A concurrent write took one of these SKUs or removed a category; "
    "nothing was written. Retry."
)


class CategoryInUse(Exception):
    """A category still holds products and cannot be deleted."""


def _is_sku_conflict(exc: IntegrityError) -> bool:
    constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "")
    return "sku" in (constraint or "")


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == FOREIGN_KEY_VIOLATION


def _write_error(exc: IntegrityError, category_id: int | None) -> ValidationError:
    if _is_sku_conflict(exc):
        return ValidationError({"sku": [MSG_SKU_TAKEN]})
    if _is_foreign_key_violation(exc) and category_id is not None:
        return ValidationError({"category": [category_missing_message(category_id)]})
    raise exc


@contextmanager
def _checked_now(*, needed: bool = True) -> Iterator[None]:
    """Run one write whose constraint errors must surface where it is caught.

    In autocommit the write is its own transaction: deferred foreign keys are
    checked when its statement ends, and an error spoils nothing else. Inside
    a transaction it runs in a savepoint with the constraints made immediate
    (three more round trips), unless *needed* is False: the write cannot
    break a constraint the database defers or reports.
    """
    if not needed or not connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        # Django declares foreign keys DEFERRABLE INITIALLY DEFERRED: a
        # category deleted by a concurrent transaction would only fail at
        # COMMIT, outside every handler (a 500). Checked per statement, it
        # fails where it is caught.
        check_constraints_now()
        yield


def product_create(*, owner: User, category: Category, **fields: Any) -> Product:
    """Create a product owned by *owner*; a taken SKU raises ValidationError."""
    product = Product(owner=owner, category=category, **fields)
    try:
        with _checked_now():
            product.save(force_insert=True)
    except IntegrityError as exc:
        raise _write_error(exc, category.pk) from exc
    return product


def product_update(
    *, product: Product, category: Category | None = None, **fields: Any
) -> Product:
    """Write the given fields of *product* (and only those); keep the rest as stored."""
    if category is not None:
        product.category = category
        fields["category_id"] = category.pk
    for name, value in fields.items():
        setattr(product, name, value)
    update_fields = [
        "category" if name == "category_id" else name for name in fields
    ] + ["updated_at"]
    # Only a new SKU or category can break a constraint (the checks on price
    # and stock were validated before).
    try:
        with _checked_now(needed=bool({"sku", "category_id"} & fields.keys())):
            product.save(update_fields=update_fields)
    except IntegrityError as exc:
        raise _write_error(exc, fields.get("category_id")) from exc
    return product


def product_delete(*, product: Product) -> None:
    """Delete *product*."""
    product.delete()


def _missing_categories(category_ids: set[int]) -> set[int]:
    found = Category.objects.filter(pk__in=category_ids).values_list("pk", flat=True)
    return category_ids - set(found)


@transaction.atomic
def products_bulk_create(*, owner: User, items: Sequence[Any]) -> list[int]:
    """Create every item, owned by *owner*, in one INSERT; return the new ids.

    All or nothing: any invalid item, a SKU repeated in *items* or already
    taken, or an unknown category raises ItemErrors and writes nothing.
    """
    errors = ItemErrorList()
    rows: list[dict[str, Any]] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        cleaned, item_errors = clean_product(item)
        if item_errors:
            errors.set(index, item_errors)
        sku = cleaned.get("sku")
        if sku is not None:
            first = first_index.setdefault(sku, index)
            if first != index:
                errors.add(index, "sku", f"Repeats the SKU of item {first}.")
        rows.append(cleaned)

    missing = _missing_categories(
        {row["category_id"] for row in rows if "category_id" in row}
    )
    taken = set(
        Product.objects.filter(sku__in=list(first_index)).values_list("sku", flat=True)
    )
    for index, row in enumerate(rows):
        if row.get("category_id") in missing:
            errors.add(index, "category", category_missing_message(row["category_id"]))
        if row.get("sku") in taken:
            errors.add(index, "sku", MSG_SKU_TAKEN)
    errors.raise_any()

    # No savepoint: an error leaves through this function's atomic block,
    # which rolls the whole request back.
    try:
        check_constraints_now()
        return Product.objects.insert_rows(rows=rows, owner_id=owner.pk)
    except IntegrityError as exc:
        # A concurrent writer took a SKU or removed a category after the checks.
        raise ItemErrors([], detail=CONCURRENT_CONFLICT) from exc


@transaction.atomic
def products_bulk_update(*, items: Sequence[Any]) -> int:
    """Write the sent fields of each item to the product with its ``id``, in one UPDATE.

    All or nothing: any invalid item, an unknown or repeated id, a SKU already
    taken, or an unknown category raises ItemErrors and writes nothing.
    """
    errors = ItemErrorList()
    rows: list[dict[str, Any]] = []
    first_id: dict[int, int] = {}
    first_sku: dict[str, int] = {}
    for index, item in enumerate(items):
        cleaned, item_errors = clean_product(item, partial=True)
        if item_errors:
            errors.set(index, item_errors)
        if not isinstance(item, Mapping):
            rows.append({})
            continue
        pk, error = clean_pk(item["id"]) if "id" in item else (None, MSG_REQUIRED)
        if error is not None:
            errors.add(index, "id", error)
        elif (first := first_id.setdefault(pk, index)) != index:
            errors.add(index, "id", f"Repeats the id of item {first}.")
        if not cleaned and not item_errors:
            errors.add(index, "non_field_errors", "No field to update.")
        sku = cleaned.get("sku")
        if sku is not None and (first := first_sku.setdefault(sku, index)) != index:
            errors.add(index, "sku", f"Repeats the SKU of item {first}.")
        rows.append({"id": pk, **cleaned})

    missing = _missing_categories(
        {row["category_id"] for row in rows if "category_id" in row}
    )
    owners_of_sku = dict(
        Product.objects.filter(sku__in=list(first_sku)).values_list("sku", "pk")
    )
    for index, row in enumerate(rows):
        if row.get("category_id") in missing:
            errors.add(index, "category", category_missing_message(row["category_id"]))
        sku = row.get("sku")
        if sku in owners_of_sku and owners_of_sku[sku] != row.get("id"):
            errors.add(index, "sku", MSG_SKU_TAKEN)
    if errors:
        existing = Product.objects.filter(pk__in=list(first_id)).values_list("pk")
        _add_unknown_ids(errors, first_id, {pk for (pk,) in existing})
        errors.raise_any()

    try:
        check_constraints_now()
        # The UPDATE itself finds the unknown ids (RETURNING), which saves a
        # SELECT on the valid path; raising rolls the UPDATE back.
        updated = Product.objects.update_rows(rows=rows)
    except IntegrityError as exc:
        raise ItemErrors([], detail=CONCURRENT_CONFLICT) from exc
    if len(updated) != len(rows):
        _add_unknown_ids(errors, first_id, set(updated))
        errors.raise_any()
    return len(updated)


def _add_unknown_ids(
    errors: ItemErrorList, indexes: dict[int, int], found: set[int]
) -> None:
    for pk, index in indexes.items():
        if pk not in found:
            errors.add(index, "id", f"No product with id {pk}.")


@transaction.atomic
def products_bulk_delete(*, ids: Sequence[Any]) -> int:
    """Delete the products with the given ids in one statement; return how many.

    All or nothing: an invalid, repeated or unknown id raises ItemErrors and
    deletes nothing.
    """
    errors = ItemErrorList()
    pks: dict[int, int] = {}
    for index, value in enumerate(ids):
        pk, error = clean_pk(value)
        if error is not None:
            errors.add(index, "id", error)
        elif (first := pks.setdefault(pk, index)) != index:
            errors.add(index, "id", f"Repeats the id of item {first}.")
    existing = Product.objects.filter(pk__in=list(pks)).values_list("pk", flat=True)
    _add_unknown_ids(errors, pks, set(existing))
    errors.raise_any()
    deleted, _ = Product.objects.filter(pk__in=list(pks)).delete()
    return deleted


MSG_SLUG_TAKEN = "category with this slug already exists."
MSG_NO_SLUG_IN_NAME = "Could not derive a slug from this name; send a slug."


def category_slug_from(name: str) -> str:
    """Return the slug a category named *name* gets when none is given."""
    return slugify(name)[:CATEGORY_SLUG_MAX_LENGTH]


def category_slug_taken_message(slug: str, *, derived: bool) -> str:
    """Return the error for a taken *slug*, said of the name when it was derived."""
    if derived:
        return (
            f"A category with this name already exists (slug {slug!r}); "
            "choose another name or send a slug."
        )
    return MSG_SLUG_TAKEN


def category_create(*, name: str, slug: str = "") -> Category:
    """Create a category, its slug derived from *name* when not given.

    A taken slug raises ValidationError on ``slug``, or on ``name`` when the
    slug was derived from it.
    """
    field = "slug" if slug else "name"
    slug = slug or category_slug_from(name)
    category = Category(name=name, slug=slug)
    try:
        with transaction.atomic():
            category.save(force_insert=True)
    except IntegrityError as exc:
        # The serializer checked the slug; a concurrent create took it since.
        raise ValidationError(
            {field: [category_slug_taken_message(slug, derived=field == "name")]}
        ) from exc
    return category


def category_update(*, category: Category, **fields: Any) -> Category:
    """Write the given fields of *category*; a taken slug raises ValidationError."""
    for name, value in fields.items():
        setattr(category, name, value)
    try:
        with transaction.atomic():
            category.save(update_fields=[*fields, "updated_at"])
    except IntegrityError as exc:
        raise ValidationError({"slug": [MSG_SLUG_TAKEN]}) from exc
    return category


def category_delete(*, category: Category) -> None:
    """Delete *category*; raise CategoryInUse while it still holds products."""
    in_use = CategoryInUse(
        "The category still holds products; move or delete them first."
    )
    if Product.objects.filter(category_id=category.pk).exists():
        raise in_use
    try:
        with transaction.atomic():
            check_constraints_now()
            category.delete()
    except (IntegrityError, ProtectedError) as exc:
        # A product was added to it after the check, by another transaction.
        raise in_use from exc


# --- Bulk upsert (import_products, seed_demo) --------------------------------

# Columns of a product row in bulk writes: the payload's, then the owner.
_UPSERT_COLUMNS = (*PRODUCT_COLUMNS, "owner_id")
# Written by every row; the optional fields only when a row carries them, so a
# file without the column keeps the stored values.
_ALWAYS_WRITTEN = tuple(c for c in _UPSERT_COLUMNS if c not in PRODUCT_OPTIONAL)
_PRODUCT_MERGE = MergeTarget(
    model=Product,
    columns=_UPSERT_COLUMNS,
    conflict="(sku)",
    match="t.sku = s.sku",
    always=_ALWAYS_WRITTEN,
    inserted={"created_at": "now()", "updated_at": "now()"},
)
_DATED_COLUMNS = (*_UPSERT_COLUMNS, "created_at", "updated_at")
# seed_demo's rows carry their own dates and never overwrite a product.
_PRODUCT_ADD = MergeTarget(model=Product, columns=_DATED_COLUMNS)
# Whether any SKU is taken, the transaction's now() and whether the session
# may skip triggers. The SKUs go as one text: encoding an array parameter costs
# more than the lookup (a separator inside a SKU would only send the batch to
# the merge or to the COPY's own unique check). now() goes as text too:
# psycopg formats a datetime slower than COPY parses it.
_NEW_SKUS_SQL = (
    "SELECT EXISTS (SELECT FROM catalog_product"
    " WHERE sku = ANY(string_to_array(%s, E'\\n'))),"
    " now()::text, {may_skip}"
)


def categories_ensure(
    *, slugs: Collection[str] | Mapping[str, str], created_at: datetime | None = None
) -> dict[str, int]:
    """Return {slug: id} for *slugs*, creating the missing categories at once.

    New categories are named after their slug, or by *slugs* when it maps
    each slug to a name; *created_at* dates them (default: now).
    """
    wanted = sorted(set(slugs))
    if not wanted:
        return {}
    names = [
        slugs[slug]
        if isinstance(slugs, Mapping)
        else slug.replace("-", " ").replace("_", " ").title()
        for slug in wanted
    ]
    with connection.cursor() as cursor:
        # One statement: the SELECT sees the rows as they were before the INSERT,
        # so existing slugs come from it and new ones from RETURNING.
        cursor.execute(
            "WITH wanted AS ("
            "  SELECT * FROM unnest(%s::text[], %s::text[]) AS w(slug, name)"
            "), created AS ("
            "  INSERT INTO catalog_category (name, slug, created_at, updated_at)"
            "  SELECT name, slug, coalesce(%s, now()), now() FROM wanted"
            "  ON CONFLICT (slug) DO NOTHING RETURNING slug, id"
            ") SELECT slug, id, true FROM created"
            " UNION ALL SELECT c.slug, c.id, false FROM catalog_category c"
            " JOIN wanted USING (slug)",
            [wanted, [name[:CATEGORY_NAME_MAX_LENGTH] for name in names], created_at],
        )
        found = cursor.fetchall()
        ids = {slug: pk for slug, pk, _ in found}
        missing = [slug for slug in wanted if slug not in ids]
        if missing:
            # Created by a concurrent transaction after this statement began.
            cursor.execute(
                "SELECT slug, id FROM catalog_category WHERE slug = ANY(%s)",
                [missing],
            )
            ids.update(cursor.fetchall())
    if any(created for *_, created in found):
        # Raw SQL sends no signal: refresh cached reads once this commits.
        bump_on_commit(*CATEGORY_WRITES)
    return ids


def _product_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    price = row["price"]
    return (
        row["sku"],
        row["name"],
        row.get("slug") or slugify(row["name"])[:SLUG_MAX_LENGTH],
        row.get("description", PRODUCT_DEFAULTS["description"]),
        # COPY's text form of a Decimal, made here: psycopg's dumper is slower.
        str(price) if type(price) is Decimal else price,
        row.get("stock", PRODUCT_DEFAULTS["stock"]),
        row.get("is_active", PRODUCT_DEFAULTS["is_active"]),
        row["category_id"],
        row["owner_id"],
    )


def _products_insert_new(latest: Mapping[str, Mapping[str, Any]]) -> bool:
    """COPY *latest* straight into catalog_product if none of its SKUs exists.

    Return False, having written nothing, when one does (or a concurrent
    transaction inserts one meanwhile): the caller then merges.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _NEW_SKUS_SQL.format(may_skip=may_skip_triggers_sql()),
            ["\n".join(latest)],
        )
        taken, now, may_skip = cursor.fetchone()
    if taken:
        return False
    rows = [(*_product_values(row), now, now) for row in latest.values()]
    return copy_new(_PRODUCT_ADD, rows, skip_triggers=may_skip)


@transaction.atomic
def products_upsert(*, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
    """Insert or update products by SKU in bulk; identical rows are left untouched.

    Each row holds clean_product's values: sku, name, price, category_id and
    owner_id, plus any of PRODUCT_OPTIONAL. A SKU repeated in *rows*: the
    last one wins. When none of the SKUs exists yet (a first load), the rows
    are copied straight into catalog_product; otherwise they are staged and
    merged (config.upsert), so unchanged rows are neither written nor counted
    as updated.
    """
    latest = {row["sku"]: row for row in rows}
    if not latest:
        return UpsertResult()
    if _products_insert_new(latest):
        result = UpsertResult(created=len(latest))
    else:
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in latest.values():
            given = tuple(f for f in PRODUCT_OPTIONAL if f in row)
            groups.setdefault(given, []).append(_product_values(row))
        result, _ = staged_merge(_PRODUCT_MERGE, groups)
    if result.created or result.updated:
        # Raw SQL sends no signal: refresh cached reads once this commits.
        bump_on_commit(*product_writes())
    return result


@transaction.atomic
def products_add(*, rows: Sequence[Sequence[Any]]) -> int:
    """Insert the product *rows* whose SKU is not taken yet; return how many.

    Each row holds the values of PRODUCT_COLUMNS, owner_id, created_at and
    updated_at (demo data); stored products stay as they are.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {may_skip_triggers_sql()}")
        (may_skip,) = cursor.fetchone()
    added = insert_missing(_PRODUCT_ADD, rows, skip_triggers=may_skip)
    if added:
        bump_on_commit(*product_writes(created=True))
    return added
