from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.db import (
    DatabaseError,
    IntegrityError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import Index, ProtectedError, QuerySet
from django.db.models.functions import Now
from django.utils.text import slugify

from catalog.invalidation import product_writes
from catalog.models import Category, Product
from catalog.validation import (
    MSG_SKU_TAKEN,
    category_missing_message,
    clean_pk,
    clean_product,
)
from config.bulkio import UpsertResult, copy_rows
from config.cache.namespaces import bump_on_commit

if TYPE_CHECKING:
    from accounts.models import User

FOREIGN_KEY_VIOLATION = "23503"


@transaction.atomic
def products_set_active(*, products: QuerySet[Product], active: bool) -> int:
    """Put *products* on sale or take them off, in one statement."""
    return products.exclude(is_active=active).update(is_active=active, updated_at=Now())


class ItemErrors(Exception):
    """Some items of a bulk write are invalid, so nothing was written."""

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None):
        super().__init__(detail or f"{len(errors)} invalid item(s)")
        self.errors = errors
        self.detail = detail


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


def _check_constraints_now() -> None:
    # Django declares foreign keys DEFERRABLE INITIALLY DEFERRED: a category
    # deleted by a concurrent transaction would only fail at COMMIT, outside
    # every handler (a 500). Checked per statement, it fails where it is caught.
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


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
        _check_constraints_now()
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


def _add(errors: dict[int, dict[str, list[str]]], index: int, field: str, msg: str):
    errors.setdefault(index, {}).setdefault(field, []).append(msg)


def _as_list(errors: dict[int, dict[str, list[str]]]) -> list[dict[str, Any]]:
    return [{"index": i, "errors": errors[i]} for i in sorted(errors)]


@transaction.atomic
def products_bulk_create(*, owner: User, items: Sequence[Any]) -> list[int]:
    """Create every item, owned by *owner*, in one INSERT; return the new ids.

    All or nothing: any invalid item, a SKU repeated in *items* or already
    taken, or an unknown category raises ItemErrors and writes nothing.
    """
    errors: dict[int, dict[str, list[str]]] = {}
    rows: list[dict[str, Any]] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        cleaned, item_errors = clean_product(item)
        if item_errors:
            errors[index] = item_errors
        sku = cleaned.get("sku")
        if sku is not None:
            first = first_index.setdefault(sku, index)
            if first != index:
                _add(errors, index, "sku", f"Repeats the SKU of item {first}.")
        rows.append(cleaned)

    missing = _missing_categories(
        {row["category_id"] for row in rows if "category_id" in row}
    )
    taken = set(
        Product.objects.filter(sku__in=list(first_index)).values_list("sku", flat=True)
    )
    for index, row in enumerate(rows):
        if row.get("category_id") in missing:
            _add(
                errors, index, "category", category_missing_message(row["category_id"])
            )
        if row.get("sku") in taken:
            _add(errors, index, "sku", MSG_SKU_TAKEN)
    if errors:
        raise ItemErrors(_as_list(errors))

    # No savepoint: an error leaves through this function's atomic block,
    # which rolls the whole request back.
    try:
        _check_constraints_now()
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
    errors: dict[int, dict[str, list[str]]] = {}
    rows: list[dict[str, Any]] = []
    first_id: dict[int, int] = {}
    first_sku: dict[str, int] = {}
    for index, item in enumerate(items):
        cleaned, item_errors = clean_product(item, partial=True)
        if item_errors:
            errors[index] = item_errors
        if not isinstance(item, Mapping):
            rows.append({})
            continue
        pk, error = (
            clean_pk(item["id"]) if "id" in item else (None, "This field is required.")
        )
        if error is not None:
            _add(errors, index, "id", error)
        elif (first := first_id.setdefault(pk, index)) != index:
            _add(errors, index, "id", f"Repeats the id of item {first}.")
        if not cleaned and not item_errors:
            _add(errors, index, "non_field_errors", "No field to update.")
        sku = cleaned.get("sku")
        if sku is not None and (first := first_sku.setdefault(sku, index)) != index:
            _add(errors, index, "sku", f"Repeats the SKU of item {first}.")
        rows.append({"id": pk, **cleaned})

    missing = _missing_categories(
        {row["category_id"] for row in rows if "category_id" in row}
    )
    owners_of_sku = dict(
        Product.objects.filter(sku__in=list(first_sku)).values_list("sku", "pk")
    )
    for index, row in enumerate(rows):
        if row.get("category_id") in missing:
            _add(
                errors, index, "category", category_missing_message(row["category_id"])
            )
        sku = row.get("sku")
        if sku in owners_of_sku and owners_of_sku[sku] != row.get("id"):
            _add(errors, index, "sku", MSG_SKU_TAKEN)
    if errors:
        existing = Product.objects.filter(pk__in=list(first_id)).values_list("pk")
        _add_unknown_ids(errors, first_id, {pk for (pk,) in existing})
        raise ItemErrors(_as_list(errors))

    try:
        _check_constraints_now()
        # The UPDATE itself finds the unknown ids (RETURNING), which saves a
        # SELECT on the valid path; raising rolls the UPDATE back.
        updated = Product.objects.update_rows(rows=rows)
    except IntegrityError as exc:
        raise ItemErrors([], detail=CONCURRENT_CONFLICT) from exc
    if len(updated) != len(rows):
        _add_unknown_ids(errors, first_id, set(updated))
        raise ItemErrors(_as_list(errors))
    return len(updated)


def _add_unknown_ids(
    errors: dict[int, dict[str, list[str]]], indexes: dict[int, int], found: set[int]
) -> None:
    for pk, index in indexes.items():
        if pk not in found:
            _add(errors, index, "id", f"No product with id {pk}.")


@transaction.atomic
def products_bulk_delete(*, ids: Sequence[Any]) -> int:
    """Delete the products with the given ids in one statement; return how many.

    All or nothing: an invalid, repeated or unknown id raises ItemErrors and
    deletes nothing.
    """
    errors: dict[int, dict[str, list[str]]] = {}
    pks: dict[int, int] = {}
    for index, value in enumerate(ids):
        pk, error = clean_pk(value)
        if error is not None:
            _add(errors, index, "id", error)
        elif (first := pks.setdefault(pk, index)) != index:
            _add(errors, index, "id", f"Repeats the id of item {first}.")
    existing = set(
        Product.objects.filter(pk__in=list(pks)).values_list("pk", flat=True)
    )
    for pk, index in pks.items():
        if pk not in existing:
            _add(errors, index, "id", f"No product with id {pk}.")
    if errors:
        raise ItemErrors(_as_list(errors))
    deleted, _ = Product.objects.filter(pk__in=list(pks)).delete()
    return deleted


MSG_SLUG_TAKEN = "category with this slug already exists."
MSG_NO_SLUG_IN_NAME = "Could not derive a slug from this name; send a slug."


def category_slug_from(name: str) -> str:
    """Return the slug a category named *name* gets when none is given."""
    return slugify(name)[:100]


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
            _check_constraints_now()
            category.delete()
    except (IntegrityError, ProtectedError) as exc:
        # A product was added to it after the check, by another transaction.
        raise in_use from exc


# --- Bulk upsert (import_products) ------------------------------------------

# Written only when a row carries them, so a file without the column keeps the
# stored values; a new product gets the model default (slug: from its name).
UPSERT_OPTIONAL_FIELDS = ("slug", "description", "stock", "is_active")
_UPSERT_DEFAULTS: dict[str, Any] = {"description": "", "stock": 0, "is_active": True}
_PRODUCT_STAGE = "catalog_product_upsert_stage"
_PRODUCT_COLUMNS = (
    "sku",
    "name",
    "slug",
    "description",
    "price",
    "stock",
    "is_active",
    "category_id",
    "owner_id",
)
_ALWAYS_WRITTEN = ("name", "price", "category_id", "owner_id")
# Whether any SKU is taken, the transaction's now() and whether the session
# may skip triggers. The SKUs go as one text: encoding an array parameter costs
# more than the lookup (a separator inside a SKU would only send the batch to
# the merge or to the COPY's own unique check). now() goes as text too:
# psycopg formats a datetime slower than COPY parses it.
_NEW_SKUS_SQL = (
    "SELECT EXISTS (SELECT FROM catalog_product"
    " WHERE sku = ANY(string_to_array(%s, E'\\n'))),"
    " now()::text,"
    " current_setting('session_replication_role') = 'origin' AND {may_skip}"
)
_CATEGORY_AT = _PRODUCT_COLUMNS.index("category_id")
_OWNER_AT = _PRODUCT_COLUMNS.index("owner_id")


def categories_ensure(*, slugs: Collection[str]) -> dict[str, int]:
    """Return {slug: id} for *slugs*, creating the missing categories at once."""
    wanted = sorted(set(slugs))
    if not wanted:
        return {}
    names = [slug.replace("-", " ").replace("_", " ").title()[:100] for slug in wanted]
    with connection.cursor() as cursor:
        # One statement: the SELECT sees the rows as they were before the INSERT,
        # so existing slugs come from it and new ones from RETURNING.
        cursor.execute(
            "WITH wanted AS ("
            "  SELECT * FROM unnest(%s::text[], %s::text[]) AS w(slug, name)"
            "), created AS ("
            "  INSERT INTO catalog_category (name, slug, created_at, updated_at)"
            "  SELECT name, slug, now(), now() FROM wanted"
            "  ON CONFLICT (slug) DO NOTHING RETURNING slug, id"
            ") SELECT slug, id FROM created"
            " UNION ALL SELECT c.slug, c.id FROM catalog_category c"
            " JOIN wanted USING (slug)",
            [wanted, names],
        )
        ids = dict(cursor.fetchall())
        missing = [slug for slug in wanted if slug not in ids]
        if missing:
            # Created by a concurrent transaction after this statement began.
            cursor.execute(
                "SELECT slug, id FROM catalog_category WHERE slug = ANY(%s)",
                [missing],
            )
            ids.update(cursor.fetchall())
    return ids


def _product_unchanged_sql(given: Sequence[str]) -> str:
    # ON CONFLICT DO UPDATE locks the existing row even when its WHERE is
    # false; dropping identical rows from the stage first means a rerun neither
    # dirties their pages nor waits on rows that other sessions hold.
    written = [*_ALWAYS_WRITTEN, *given]
    stored = ", ".join(f"p.{c}" for c in written)
    staged = ", ".join(f"s.{c}" for c in written)
    return (
        f"DELETE FROM {_PRODUCT_STAGE} s USING catalog_product p"  # noqa: S608
        f" WHERE s.grp = %s AND p.sku = s.sku"
        f" AND ({stored}) IS NOT DISTINCT FROM ({staged})"
    )


def _product_merge_sql(given: Sequence[str]) -> str:
    written = [*_ALWAYS_WRITTEN, *given]
    columns = ", ".join(_PRODUCT_COLUMNS)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in written)
    stored = ", ".join(f"p.{c}" for c in written)
    incoming = ", ".join(f"EXCLUDED.{c}" for c in written)
    return (
        "WITH merged AS ("  # noqa: S608 - identifiers are module constants
        f" INSERT INTO catalog_product AS p ({columns}, created_at, updated_at)"
        f" SELECT {columns}, now(), now() FROM {_PRODUCT_STAGE} WHERE grp = %s"
        f" ON CONFLICT (sku) DO UPDATE SET {assignments},"
        " updated_at = EXCLUDED.updated_at"
        f" WHERE ({stored}) IS DISTINCT FROM ({incoming})"
        " RETURNING xmax = 0 AS inserted"
        ") SELECT count(*) FILTER (WHERE inserted), count(*) FROM merged"
    )


def _product_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    price = row["price"]
    return (
        row["sku"],
        row["name"],
        row.get("slug") or slugify(row["name"])[:200],
        row.get("description", _UPSERT_DEFAULTS["description"]),
        # COPY's text form of a Decimal, made here: psycopg's dumper is slower.
        str(price) if type(price) is Decimal else price,
        row.get("stock", _UPSERT_DEFAULTS["stock"]),
        row.get("is_active", _UPSERT_DEFAULTS["is_active"]),
        row["category_id"],
        row["owner_id"],
    )


def _referenced_rows_locked(values: Sequence[tuple[Any, ...]]) -> bool:
    # What the deferred foreign-key triggers would do once per row, done once
    # per batch: lock each referenced category and owner FOR KEY SHARE until
    # commit (a concurrent DELETE then waits, and its own check sees these
    # rows), and say whether every one of them exists.
    categories = {row[_CATEGORY_AT] for row in values}
    owners = {row[_OWNER_AT] for row in values}
    owner_model = Product._meta.get_field("owner").related_model
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM (SELECT FROM"  # noqa: S608
            f" {Category._meta.db_table} WHERE {Category._meta.pk.column}"
            " = ANY(%s) FOR KEY SHARE) c), (SELECT count(*) FROM (SELECT FROM"
            f" {owner_model._meta.db_table} WHERE {owner_model._meta.pk.column}"
            " = ANY(%s) FOR KEY SHARE) o)",
            [list(categories), list(owners)],
        )
        found = cursor.fetchone()
    return found == (len(categories), len(owners))


def _products_insert_new(latest: Mapping[str, Mapping[str, Any]]) -> bool:
    """COPY *latest* straight into catalog_product if none of its SKUs exists.

    Return False, having written nothing, when one does (or a concurrent
    transaction inserts one meanwhile): the caller then merges.
    """
    # SET session_replication_role: superusers, or a GRANT SET ON PARAMETER.
    may_skip = (
        "current_setting('is_superuser') = 'on'"
        if connection.pg_version < 150000
        else "has_parameter_privilege('session_replication_role', 'SET')"
    )
    with connection.cursor() as cursor:
        cursor.execute(_NEW_SKUS_SQL.format(may_skip=may_skip), ["\n".join(latest)])
        taken, now, may_skip_triggers = cursor.fetchone()
    if taken:
        return False
    values = [(*_product_values(row), now, now) for row in latest.values()]
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # The new rows are checked against their categories and owners
            # here, in one query, instead of by two trigger calls per row at
            # commit (on a first load, about as long as the COPY itself).
            skip_triggers = may_skip_triggers and _referenced_rows_locked(values)
            if skip_triggers:
                cursor.execute("SET LOCAL session_replication_role = replica")
            copy_rows(
                Product._meta.db_table,
                (*_PRODUCT_COLUMNS, "created_at", "updated_at"),
                values,
            )
            if skip_triggers:
                # Only the COPY skips them: the rest of the transaction (and
                # the trigger events queued before) keeps the usual checks.
                cursor.execute("SET LOCAL session_replication_role = origin")
    except IntegrityError as exc:
        if not _is_sku_conflict(exc):
            raise
        return False
    return True


def _products_merge(latest: Mapping[str, Mapping[str, Any]]) -> UpsertResult:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in latest.values():
        given = tuple(f for f in UPSERT_OPTIONAL_FIELDS if f in row)
        groups.setdefault(given, []).append(row)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_PRODUCT_STAGE} ("
            " grp integer, sku text, name text, slug text, description text,"
            " price numeric(12, 2), stock integer, is_active boolean,"
            " category_id bigint, owner_id bigint"
            ") ON COMMIT DELETE ROWS"
        )
        cursor.execute(f"TRUNCATE {_PRODUCT_STAGE}")
    copy_rows(
        _PRODUCT_STAGE,
        ("grp", *_PRODUCT_COLUMNS),
        (
            (grp, *_product_values(row))
            for grp, group in enumerate(groups.values())
            for row in group
        ),
    )
    result = UpsertResult()
    with connection.cursor() as cursor:
        for grp, (given, group) in enumerate(groups.items()):
            cursor.execute(_product_unchanged_sql(given), [grp])
            cursor.execute(_product_merge_sql(given), [grp])
            created, written = cursor.fetchone()
            result += UpsertResult(created, written - created, len(group) - written)
    return result


@transaction.atomic
def products_upsert(*, rows: Sequence[Mapping[str, Any]]) -> UpsertResult:
    """Insert or update products by SKU in bulk; identical rows are left untouched.

    Each row holds clean_product's values: sku, name, price, category_id and
    owner_id, plus any of UPSERT_OPTIONAL_FIELDS. A SKU repeated in *rows*: the
    last one wins. When none of the SKUs exists yet (a first load), the rows
    are copied straight into catalog_product. Otherwise they are staged with
    COPY into a temporary table and merged with one INSERT ... ON CONFLICT
    (sku) DO UPDATE ... WHERE IS DISTINCT FROM per set of optional columns, so
    unchanged rows are neither written nor counted as updated.
    """
    latest = {row["sku"]: row for row in rows}
    if not latest:
        return UpsertResult()
    if _products_insert_new(latest):
        result = UpsertResult(created=len(latest))
    else:
        result = _products_merge(latest)
    if result.created or result.updated:
        # Raw SQL sends no signal: refresh cached reads once this commits.
        bump_on_commit(*product_writes())
    return result


# --- Index deferral (import_products) ----------------------------------------

# Product.Meta.indexes serve filters, orderings and search; a bulk load does
# not need them (the upsert needs only the primary key and the unique SKU).
# Kept up row by row they cost more than the rest of a load into an empty
# catalog, while built once over the loaded table they cost a fraction of it.

# Session-level advisory lock held while indexes are absent on purpose, so
# that another session never takes them for the leftovers of a crash.
_INDEX_LOCK_KEY = 0x63617470  # "catp"
# Long enough for the backend of a killed import to notice and release it.
_INDEX_LOCK_WAIT = "10s"
_DROP_LOCK_WAIT = "2s"
# Per build: sorts and GIN accumulates in memory when they fit (the server
# default is 64MB, which makes the full-text build spill).
INDEX_BUILD_MEMORY = "512MB"
INDEX_BUILD_WORKERS = 2
LOCK_NOT_AVAILABLE = "55P03"


@contextmanager
def product_index_lock() -> Iterator[bool]:
    """Hold the lock that covers deliberate index work on catalog_product.

    Yield whether it was obtained within _INDEX_LOCK_WAIT; False means that
    another session is loading products with the indexes dropped.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [_INDEX_LOCK_WAIT]
            )
            cursor.execute("SELECT pg_advisory_lock(%s)", [_INDEX_LOCK_KEY])
        held = True
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        held = False
    try:
        yield held
    finally:
        if held:
            # A lost connection has released the lock already.
            with suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_INDEX_LOCK_KEY])


def product_indexes_missing() -> list[str]:
    """Return the names of Product's model indexes absent from the database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = %s",
            [Product._meta.db_table],
        )
        present = {name for (name,) in cursor.fetchall()}
    return [i.name for i in Product._meta.indexes if i.name not in present]


def _index_build(index: Index) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        # CREATE INDEX refuses a table with deferred foreign-key checks
        # pending in the enclosing transaction (a caller's or a test's).
        _check_constraints_now()
        # For this transaction only: a bulk build outlasts the statement
        # timeout of ordinary queries and is faster with more memory.
        cursor.execute(
            "SELECT set_config('statement_timeout', '0', true),"
            " set_config('maintenance_work_mem', %s, true)",
            [INDEX_BUILD_MEMORY],
        )
        with connection.schema_editor(atomic=False) as editor:
            editor.add_index(Product, index)


def _index_build_in_thread(index: Index) -> None:
    try:
        _index_build(index)
    finally:
        connection.close()


def product_indexes_restore() -> list[str]:
    """Create Product's missing model indexes as migrations do; return their names.

    Outside a transaction they are built INDEX_BUILD_WORKERS at a time on
    connections of their own, each in its own transaction, so an interruption
    keeps those already built. Writes to catalog_product wait meanwhile.
    """
    missing = set(product_indexes_missing())
    # A GIN build takes several times as long as a btree one: starting them
    # first lets the workers finish close together.
    todo = sorted(
        (index for index in reversed(Product._meta.indexes) if index.name in missing),
        key=lambda index: not isinstance(index, GinIndex),
    )
    if len(todo) < 2 or connection.in_atomic_block:
        # Other connections could neither see this transaction's rows nor get
        # past its locks.
        for index in todo:
            _index_build(index)
    else:
        with ThreadPoolExecutor(
            max_workers=INDEX_BUILD_WORKERS, thread_name_prefix="index-build"
        ) as pool:
            futures = [pool.submit(_index_build_in_thread, index) for index in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return [index.name for index in todo]


def product_indexes_drop() -> list[str]:
    """Drop Product's model indexes (filters, orderings, search); return their names.

    Call it under product_index_lock() and build them back with
    product_indexes_restore(); until then lists and searches scan the table.
    The primary key and the unique SKU stay. Drops nothing (and returns [])
    when the table stays in use for _DROP_LOCK_WAIT.
    """
    missing = set(product_indexes_missing())
    dropped = [index for index in Product._meta.indexes if index.name not in missing]
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # A queued DROP INDEX blocks every later reader of the table:
            # give up soon rather than stall the API behind a long transaction.
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", [_DROP_LOCK_WAIT]
            )
            with connection.schema_editor(atomic=False) as editor:
                for index in dropped:
                    editor.remove_index(Product, index)
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        return []
    return [index.name for index in dropped]
