import time
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.models import QuerySet

from catalog.models import Category, Product
from catalog.validation import PRODUCT_FILE_COLUMNS
from config.bulkio import FORMATS, RowWriter, detect_format, open_output

# Rows fetched per round trip of the server-side cursor (or per keyset batch).
CHUNK_SIZE = 5000
# What each file column reads: the foreign keys by their natural keys.
_SOURCES = {
    **{column: column for column in PRODUCT_FILE_COLUMNS},
    "category": "category__slug",
    "owner": "owner__email",
}


def _stream(values: QuerySet) -> Iterator[tuple]:
    """Yield the rows of *values* (pk first, ordered by pk) in bounded memory.

    A server-side cursor (iterator()) when the connection allows one; behind a
    pooler in transaction mode (PgBouncer: DISABLE_SERVER_SIDE_CURSORS) no
    cursor survives between statements, so keyset batches by pk instead (each
    batch its own snapshot).
    """
    if not connections[values.db].settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        yield from values.iterator(chunk_size=CHUNK_SIZE)
        return
    last = None
    while True:
        batch = values if last is None else values.filter(pk__gt=last)
        rows = list(batch[:CHUNK_SIZE])
        yield from rows
        if len(rows) < CHUNK_SIZE:
            return
        last = rows[-1][0]


class Command(BaseCommand):
    help = (
        "Stream products to CSV or JSON Lines (a file, or standard output), in "
        "the columns import_products reads, so the file imports back unchanged."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-o",
            "--output",
            default="-",
            help="File to write (default '-': standard output).",
        )
        parser.add_argument(
            "--format",
            choices=FORMATS,
            help="Output format (default: by extension; csv on standard output).",
        )
        parser.add_argument(
            "--category",
            action="append",
            metavar="SLUG",
            help="Only products of this category (repeatable).",
        )
        active = parser.add_mutually_exclusive_group()
        active.add_argument(
            "--active", action="store_true", help="Only products on sale."
        )
        active.add_argument(
            "--inactive", action="store_true", help="Only products off sale."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        output = options["output"]
        fmt = options["format"] or (
            "csv" if output == "-" else detect_format(output, None)
        )
        products = Product.objects.all()
        if options["category"]:
            slugs = set(options["category"])
            known = set(
                Category.objects.filter(slug__in=slugs).values_list("slug", flat=True)
            )
            if unknown := sorted(slugs - known):
                raise CommandError(f"Unknown category: {', '.join(unknown)}")
            products = products.filter(category__slug__in=slugs)
        if options["active"]:
            products = products.filter(is_active=True)
        elif options["inactive"]:
            products = products.filter(is_active=False)
        columns = list(PRODUCT_FILE_COLUMNS)
        values = products.order_by("pk").values_list(
            "pk", *(_SOURCES[c] for c in columns)
        )

        started = time.monotonic()
        out, close = open_output(output, self.stdout._out)
        count = 0
        try:
            writer = RowWriter(out, fmt=fmt, columns=columns)
            for row in _stream(values):
                writer.write(dict(zip(columns, row[1:], strict=True)))
                count += 1
        except BrokenPipeError:
            raise CommandError("Output closed early (broken pipe).") from None
        finally:
            if close:
                out.close()
            else:
                out.flush()
        seconds = max(time.monotonic() - started, 1e-6)
        if options["verbosity"] >= 1:
            # On standard output the data owns stdout; the summary goes to stderr.
            target = self.stderr if output == "-" else self.stdout
            target.write(
                f"export_products: rows={count} seconds={seconds:.2f}"
                f" rows_per_s={count / seconds:.0f}"
            )
