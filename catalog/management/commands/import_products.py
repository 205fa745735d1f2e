import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError

from accounts.services import users_ids_by_email
from catalog.models import Category, Product
from catalog.services import categories_ensure, products_upsert
from catalog.validation import (
    BLANK_IS_ABSENT,
    PRODUCT_FILE_COLUMNS,
    PRODUCT_OPTIONAL,
    PRODUCT_REQUIRED,
    clean_category_slug,
    clean_owner_email,
    clean_product,
)
from config.bulkio import (
    ImportCommand,
    Record,
    Rejection,
    UpsertResult,
    error_line,
)
from config.indexes import Deferral, deferred_indexes, indexes_missing
from config.metrics import BULK_ROWS_WRITTEN
from config.upsert import analyze

MSG_NO_OWNER = "No user with this email address."
MSG_NO_CATEGORY = "No category with this slug (--create-categories creates it)."


# Files name few categories and owners many times: each value is checked once
# per run, and the memo starts over when it holds this many.
_MEMO_SIZE = 100_000


def _memoized(
    cache: dict[str, tuple[str | None, str | None]],
    clean: Callable[[Any], tuple[str | None, str | None]],
    value: Any,
) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return clean(value)
    if (known := cache.get(value)) is None:
        if len(cache) >= _MEMO_SIZE:
            cache.clear()
        known = cache[value] = clean(value)
    return known


class Command(ImportCommand):
    help = (
        "Create or update products from a CSV or JSON Lines file ('-' for stdin), "
        "upserting on SKU in batches of one transaction each. Columns: sku, name, "
        "price, category (the slug of an existing category, or of one to create "
        "with --create-categories), owner (an email, or --owner), and optionally "
        "slug, description, stock, is_active (absent ones keep their stored "
        "values). A SKU repeated in the file: the last occurrence wins, and the "
        "lines are named. Lines that cannot be read (bad UTF-8, broken CSV "
        "quoting, invalid JSON) are rejected, the others load. Unknown columns "
        "are ignored with a notice (refused with --strict); columns starting "
        "with '_' are ignored silently, so an --errors file can be fixed and fed "
        "back. Exits non-zero when any row is rejected. Any product index that "
        "an interrupted run left missing is built again first."
    )
    columns = PRODUCT_FILE_COLUMNS
    required = PRODUCT_REQUIRED
    key_name = "sku"
    # prepare() reads owners and categories, which the batches never write
    # (--create-categories skips its category check): it can run ahead, so
    # the database loads one batch while the next is resolved.
    prepare_ahead = True

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--owner",
            metavar="EMAIL",
            help="Owner of rows that name none (required without an owner column).",
        )
        parser.add_argument(
            "--create-categories",
            action="store_true",
            help="Create the categories the file names that do not exist (named"
            " after their slug); without it, their rows are rejected.",
        )
        parser.add_argument(
            "--defer-indexes",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Drop the product indexes that serve filters, orderings and search"
            " (not the primary key nor the unique SKU) for the load, and build them"
            " after the last batch: much faster for a big load, but product lists"
            " and searches scan the table until the load ends, and writes to"
            " products wait while the indexes are built. Default: on when the"
            " catalog is empty. Never with --dry-run.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.deferral: Deferral | None = None
        self.verbosity = options["verbosity"]
        if options["dry_run"]:
            # A dry run changes nothing, indexes included: only say what is missing.
            if missing := indexes_missing(Product):
                self._note(
                    f"catalog_product lacks index(es) {', '.join(missing)}; the"
                    " next import that is not a dry run builds them."
                )
            super().handle(*args, **options)
            return
        try:
            with deferred_indexes(Product, defer=options["defer_indexes"]) as deferral:
                self._say_what_happened_to(deferral)
                self.deferral = deferral
                super().handle(*args, **options)
        except DatabaseError as exc:
            raise CommandError(f"database error: {error_line(exc, repr(exc))}") from exc

    def _say_what_happened_to(self, deferral: Deferral) -> None:
        if not deferral.held:
            self._note(
                "Another import is loading products with the indexes"
                " dropped; it builds them when it ends."
            )
        if deferral.restored:
            self._note(
                f"Built missing index(es) {', '.join(deferral.restored)}"
                " (left by an interrupted import?)."
            )
        if deferral.busy:
            self._note(
                "catalog_product is in use by another transaction; loading"
                " with its indexes in place."
            )

    def after_batches(self) -> None:
        """Build the indexes dropped for this load, before the summary line."""
        if self.deferral is None or not self.deferral.dropped:
            return
        terminal = self.verbosity >= 1 and self.stderr.isatty()
        if terminal:
            # Plain text: standard error's default style is the error one.
            self.stderr.write(
                f"\rbuilding {len(self.deferral.dropped)} indexes...",
                style_func=str,
                ending="",
            )
        started = time.monotonic()
        try:
            names = self.deferral.finish()
        except (KeyboardInterrupt, DatabaseError) as exc:
            reason = error_line(exc, "interrupted")
            raise CommandError(
                f"indexes not built ({reason}); the next import_products run"
                " builds them"
            ) from exc
        finally:
            if terminal:
                self.stderr.write("\r\x1b[K", style_func=str, ending="")
        if self.verbosity >= 2:
            self.stdout.write(
                f"indexes built in {time.monotonic() - started:.1f} s:"
                f" {', '.join(names)}"
            )
        # A load big enough to defer the indexes leaves the table unvacuumed:
        # lists would read every row from the heap until autovacuum came.
        started = time.monotonic()
        try:
            vacuumed = analyze(Product, vacuum=True)
        except (KeyboardInterrupt, DatabaseError) as exc:
            # The rows and indexes are in: the load succeeded, only faster
            # reads wait for autovacuum.
            reason = error_line(exc, "interrupted")
            self._note(
                f"catalog_product not vacuumed ({reason}); autovacuum will,"
                " and lists may read the table's rows until it has."
            )
            return
        if self.verbosity >= 2:
            done = "vacuumed and analyzed" if vacuumed else "analyzed"
            self.stdout.write(
                f"catalog_product {done} in {time.monotonic() - started:.1f} s"
            )

    def check_options(self, options: dict[str, Any]) -> None:
        self._category_memo: dict[str, tuple[str | None, str | None]] = {}
        self._owner_memo: dict[str, tuple[str | None, str | None]] = {}
        self._known_categories: set[str] = set()
        self.create_categories: bool = options["create_categories"]
        self.default_owner: str | None = None
        if options["owner"]:
            email, error = clean_owner_email(options["owner"])
            if error:
                raise CommandError(f"--owner: {error}")
            owners = users_ids_by_email(emails={email})
            if email not in owners:
                raise CommandError(f"--owner: {MSG_NO_OWNER} ({options['owner']})")
            self.default_owner = email
        self.required = type(self).required
        if self.default_owner is None:
            self.required = (*self.required, "owner")

    def row_key(self, row: Any) -> Any:
        return row[0]["sku"]

    def validate(self, records: Sequence[Record]) -> tuple[list[Any], list[Rejection]]:
        """Check rows with the API's rules; categories and owners by name only."""
        pending: list[tuple[dict[str, Any], Record, str, str]] = []
        rejections: list[Rejection] = []
        categories, owners = self._category_memo, self._owner_memo
        for record in records:
            data = record.data
            fields = data.copy()
            fields.pop("category", None)
            fields.pop("owner", None)
            cleaned, errors = clean_product(fields)
            # clean_product wants a category id; the file names a slug instead.
            errors.pop("category", None)
            slug, error = _memoized(
                categories, clean_category_slug, data.get("category")
            )
            if error:
                errors["category"] = [error]
            owner = data.get("owner")
            if owner in (None, ""):
                owner = self.default_owner
            email, error = _memoized(owners, clean_owner_email, owner)
            if error:
                errors["owner"] = [error]
            if errors:
                rejections.append(Rejection(record.line, data, errors))
                continue
            for name in PRODUCT_OPTIONAL:
                value = fields.get(name)
                if name not in fields or (value == "" and name in BLANK_IS_ABSENT):
                    cleaned.pop(name, None)
            cleaned.pop("category_id", None)
            pending.append((cleaned, record, slug, email))
        return pending, rejections

    def prepare(
        self, items: list[Any]
    ) -> tuple[list[tuple[int, Any]], list[Rejection]]:
        """Map owner emails to ids and check category slugs, a query each at most.

        Rows naming an unknown owner, or an unknown category without
        --create-categories, are rejected.
        """
        rejections: list[Rejection] = []
        owners = users_ids_by_email(emails={email for *_, email in items})
        unknown = (
            set()
            if self.create_categories
            else self._unknown_categories({slug for _, _, slug, _ in items})
        )
        rows: list[tuple[int, Any]] = []
        for cleaned, record, slug, email in items:
            if email in owners and slug not in unknown:
                cleaned["owner_id"] = owners[email]
                rows.append((record.line, (cleaned, slug)))
                continue
            errors = {}
            if slug in unknown:
                errors["category"] = [MSG_NO_CATEGORY]
            if email not in owners:
                errors["owner"] = [MSG_NO_OWNER]
            rejections.append(Rejection(record.line, record.data, errors))
        return rows, rejections

    def _unknown_categories(self, slugs: set[str]) -> set[str]:
        known = self._known_categories
        wanted = slugs - known
        if not wanted:
            return set()
        found = set(
            Category.objects.filter(slug__in=wanted).values_list("slug", flat=True)
        )
        if len(known) + len(found) > _MEMO_SIZE:
            known.clear()
        known.update(found)
        return wanted - found

    def upsert(self, rows: list[Any]) -> UpsertResult:
        # Missing categories (--create-categories, or one deleted since
        # prepare) are created in the batch transaction, so a dry run or a
        # failed batch leaves none behind.
        categories = categories_ensure(slugs={slug for _, slug in rows})
        for cleaned, slug in rows:
            cleaned["category_id"] = categories[slug]
        result = products_upsert(rows=[cleaned for cleaned, _ in rows])
        # products_upsert bumps the catalog cache namespace on commit itself.
        if not self.options["dry_run"] and (result.created or result.updated):
            created, updated = result.created, result.updated
            BULK_ROWS_WRITTEN.labels(model="product", operation="create").inc(created)
            BULK_ROWS_WRITTEN.labels(model="product", operation="update").inc(updated)
        return result

    def _note(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(message, self.style.WARNING)
