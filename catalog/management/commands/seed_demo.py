import argparse
import functools
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import User
from accounts.services import users_add
from catalog import demo
from catalog.models import Product
from catalog.services import categories_ensure, products_add
from config.bulkio import Prefetcher, Progress
from config.indexes import deferred_indexes
from config.upsert import analyze

# Rows per transaction.
CHUNK_ROWS = 50_000
# A load of at least this many rows, and of at least as many as the table
# holds, drops the table's indexes and builds them after the last chunk.
DEFER_INDEXES_FROM = 100_000


def _demo_keys(model: type[models.Model]) -> tuple[models.QuerySet, Callable, str]:
    """Return the model's rows keyed as demo rows are, the key maker, its pattern."""
    if model is User:
        keyed = User.objects.annotate(key=Lower("email"))
        return keyed, demo.demo_email, demo.DEMO_EMAIL_PATTERN
    return (
        Product.objects.annotate(key=models.F("sku")),
        demo.demo_sku,
        demo.DEMO_SKU_PATTERN,
    )


class Command(BaseCommand):
    help = (
        "Load realistic demo users, categories and products fast (COPY), "
        "deterministically with --seed; rerunning creates no duplicates."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--users", type=int, default=50, help="Demo users wanted (default 50)."
        )
        parser.add_argument(
            "--products",
            type=int,
            default=500,
            help="Demo products wanted (default 500).",
        )
        parser.add_argument(
            "--categories",
            type=int,
            default=8,
            help="Categories wanted (default 8).",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=1,
            help="Random seed: the same seed gives the same data (default 1).",
        )
        parser.add_argument(
            "--password",
            help="One password for every demo user, hashed once; without it demo "
            "users get unusable passwords (set one through password reset).",
        )
        parser.add_argument(
            "--defer-indexes",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Drop the users' and products' indexes that serve filters,"
            " orderings and search for the load and build them after it (as"
            " import_products does). Default: on for a table that gets at least"
            f" {DEFER_INDEXES_FROM:,} rows and at least as many as it holds.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users, products = options["users"], options["products"]
        categories = options["categories"]
        if min(users, products, categories) < 0:
            raise CommandError("--users, --products and --categories must be >= 0.")
        if categories > demo.max_categories():
            raise CommandError(f"--categories must be at most {demo.max_categories()}.")
        if products and not categories:
            raise CommandError("Products need at least one category (--categories).")
        if products and not users and not User.objects.active().exists():
            raise CommandError("Products need an owner: pass --users 1 or more.")
        started = time.monotonic()
        now = timezone.now()
        seed, password = options["seed"], options["password"]
        password_hash = make_password(password) if password else None
        self.defer = options["defer_indexes"]

        names = demo.category_names(categories)
        ids = categories_ensure(slugs=names, created_at=now - demo.TWO_YEARS)
        category_ids = [ids[slug] for slug in names]
        self.progress = Progress(
            self.stderr, total=users + products, enabled=options["verbosity"] >= 1
        )
        try:
            new_users = self._load(
                User,
                users,
                functools.partial(
                    demo.user_rows, seed=seed, now=now, password_hash=password_hash
                ),
                users_add,
                done=0,
            )
            new_products = 0
            if products:
                owner_ids = self._owner_ids(users)
                if not owner_ids:
                    raise CommandError(
                        "Products need an owner: pass --users 1 or more."
                    )
                new_products = self._load(
                    Product,
                    products,
                    functools.partial(
                        demo.product_rows,
                        seed=seed,
                        now=now,
                        category_ids=category_ids,
                        owner_ids=owner_ids,
                    ),
                    products_add,
                    done=users,
                )
        finally:
            self.progress.close()
        if new_users or new_products:
            analyze(User, Product)
        seconds = time.monotonic() - started
        if options["verbosity"] >= 1:
            login = (
                "same password for all"
                if password
                else "unusable passwords (use password reset)"
            )
            self.stdout.write(
                f"seed_demo: categories={len(category_ids)} users_created={new_users}"
                f" products_created={new_products} seconds={seconds:.2f}"
                f" ({login})",
                self.style.SUCCESS,
            )

    def _load(
        self,
        model: type[models.Model],
        count: int,
        make_rows: Callable[..., Iterator[tuple[Any, ...]]],
        add: Callable[..., int],
        *,
        done: int,
    ) -> int:
        """Add the missing demo rows 0..*count* of *model* by chunks; return how many.

        A chunk already present is skipped without making its rows. *done* is
        the count of rows of the run before these, for the progress bar (moved
        once per chunk).
        """
        if not count:
            return 0
        keyed, key, pattern = _demo_keys(model)
        present = _present(keyed, pattern, key(0), key(count - 1))
        defer = self.defer
        if defer is None:
            adding = count - present
            defer = adding >= DEFER_INDEXES_FROM and adding >= keyed.count()
        # Demo keys are fixed-width, so a chunk's keys sort inside its range.
        todo = []
        for start in range(0, count, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, count)
            if _present(keyed, pattern, key(start), key(stop - 1)) == stop - start:
                self.progress.update(done + stop, done + stop)
            else:
                todo.append((start, stop))
        added = 0
        # The next chunk is made (pure Python) while the database writes this one.
        chunks = Prefetcher(
            ((stop, list(make_rows(start, stop))) for start, stop in todo), depth=1
        )
        try:
            with deferred_indexes(model, defer=defer):
                for stop, rows in chunks:
                    # One transaction per chunk: each committed chunk refreshes
                    # the cached reads itself, so an interrupted run leaves none
                    # stale.
                    added += add(rows=rows)
                    self.progress.update(done + stop, done + stop)
        finally:
            chunks.close()
        return added

    def _owner_ids(self, users: int) -> list[int]:
        if not users:
            active = User.objects.active().order_by("id")
            return list(active.values_list("id", flat=True)[:1000])
        keyed, key, pattern = _demo_keys(User)
        demo_users = keyed.filter(
            key__range=(key(0), key(users - 1)), key__regex=pattern
        )
        return list(demo_users.order_by("key").values_list("id", flat=True))


def _present(keyed: models.QuerySet, pattern: str, first: str, last: str) -> int:
    """Return how many demo rows with keys from *first* to *last* exist.

    The pattern leaves out other keys that happen to sort in the range. A
    range whose ends do not match it cannot be counted this way: 0, so that
    its rows are made and the service finds those present.
    """
    if not all(re.match(pattern, key) for key in (first, last)):
        return 0
    return keyed.filter(key__range=(first, last), key__regex=pattern).count()
