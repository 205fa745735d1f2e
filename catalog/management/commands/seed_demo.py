import functools
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.invalidation import user_writes
from accounts.models import User
from catalog.invalidation import CATEGORY_WRITES, product_writes
from config.bulkio import Progress, copy_rows
from config.cache.namespaces import bump_on_commit

CATEGORY_NAMES = [
    "Electronics",
    "Books",
    "Home & Kitchen",
    "Garden & Outdoors",
    "Toys & Games",
    "Sports & Fitness",
    "Clothing",
    "Beauty & Health",
    "Office Supplies",
    "Pet Supplies",
    "Automotive",
    "Music",
    "Grocery",
    "Baby",
    "Tools & Hardware",
    "Jewelry",
]
FIRST_NAMES = [
    "olivia",
    "liam",
    "emma",
    "noah",
    "ava",
    "elijah",
    "sophia",
    "lucas",
    "mia",
    "mateo",
    "isabella",
    "levi",
    "amelia",
    "ethan",
    "harper",
    "james",
    "evelyn",
    "leo",
    "aria",
    "henry",
    "ella",
    "jack",
    "chloe",
    "owen",
    "nora",
    "samuel",
    "zoe",
    "daniel",
    "lily",
    "david",
    "hannah",
    "omar",
    "leila",
    "yuki",
    "hiro",
    "priya",
    "arjun",
    "fatima",
    "ali",
    "chen",
    "wei",
    "ana",
    "jose",
    "ingrid",
    "lars",
    "sofia",
    "marco",
]
LAST_NAMES = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "clark",
    "lewis",
    "walker",
    "hall",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "nguyen",
    "kim",
    "patel",
    "tanaka",
    "muller",
    "rossi",
    "silva",
    "novak",
]
ADJECTIVES = [
    "Compact",
    "Deluxe",
    "Ergonomic",
    "Wireless",
    "Portable",
    "Premium",
    "Classic",
    "Smart",
    "Rugged",
    "Lightweight",
    "Eco-Friendly",
    "Vintage",
    "Modern",
    "Heavy-Duty",
    "Foldable",
    "Adjustable",
    "Waterproof",
    "Handcrafted",
    "Organic",
    "Minimalist",
    "Professional",
    "Quiet",
    "Rechargeable",
]
MATERIALS = [
    "Steel",
    "Bamboo",
    "Leather",
    "Cotton",
    "Ceramic",
    "Aluminium",
    "Oak",
    "Glass",
    "Carbon",
    "Wool",
    "Linen",
    "Titanium",
    "Recycled",
    "Silicone",
    "Walnut",
]
NOUNS = [
    "Backpack",
    "Lamp",
    "Kettle",
    "Headphones",
    "Chair",
    "Notebook",
    "Speaker",
    "Blender",
    "Jacket",
    "Water-Bottle",
    "Keyboard",
    "Mouse",
    "Desk",
    "Tent",
    "Drill",
    "Mug",
    "Skillet",
    "Watch",
    "Camera",
    "Charger",
    "Pillow",
    "Blanket",
    "Sneakers",
    "Scarf",
    "Planter",
    "Router",
    "Monitor",
    "Thermos",
    "Toolkit",
    "Puzzle",
]
FEATURES = [
    "built to last",
    "easy to clean",
    "designed for everyday use",
    "with a two-year warranty",
    "made from sustainable materials",
    "perfect as a gift",
    "tested by professionals",
    "ships in recyclable packaging",
    "with a sleek matte finish",
    "compact enough for travel",
]
PRICE_CENTS = ("0.99", "0.49", "0.00", "0.95", "0.50")
TWO_YEARS = timedelta(days=730)
CHUNK_ROWS = 50_000

_USER_COLUMNS = (
    "email",
    "username",
    "password",
    "is_active",
    "is_staff",
    "is_superuser",
    "created_at",
    "updated_at",
)
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
    "created_at",
    "updated_at",
)


DEMO_EMAIL_PATTERN = r"^demo[0-9]{6}@example\.com$"
DEMO_SKU_PATTERN = r"^DEMO-[0-9]{7}$"


def demo_email(index: int) -> str:
    """Return the deterministic email of demo user *index*."""
    return f"demo{index:06d}@example.com"


def demo_sku(index: int) -> str:
    """Return the deterministic SKU of demo product *index*."""
    return f"DEMO-{index:07d}"


class _Counter:
    """Pass rows through, counting them and moving the progress bar."""

    # Rows between two progress updates (each costs a clock read).
    TICK = 1000

    def __init__(
        self, rows: Iterator[tuple[Any, ...]], progress: Progress, done: int
    ) -> None:
        self.rows = rows
        self.progress = progress
        self.done = done  # rows of the run before these
        self.count = 0

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        update, done, tick = self.progress.update, self.done, self.TICK
        for count, row in enumerate(self.rows, 1):
            if not count % tick:
                update(done + count, done + count)
            yield row
            self.count = count


def _age(rng: random.Random) -> timedelta:
    # Squaring a uniform draw skews towards recent dates, like a growing shop:
    # about 20% of rows fall in the last 30 days, the rest over two years.
    return TWO_YEARS * (rng.random() ** 2)


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

    def handle(self, *args: Any, **options: Any) -> None:
        users, products = options["users"], options["products"]
        categories = options["categories"]
        if min(users, products, categories) < 0:
            raise CommandError("--users, --products and --categories must be >= 0.")
        if categories > len(CATEGORY_NAMES) * 100:
            raise CommandError(
                f"--categories must be at most {len(CATEGORY_NAMES) * 100}."
            )
        if products and not categories:
            raise CommandError("Products need at least one category (--categories).")
        if products and not users and not User.objects.active().exists():
            raise CommandError("Products need an owner: pass --users 1 or more.")
        started = time.monotonic()
        now = timezone.now()
        seed = options["seed"]
        password = options["password"]
        password_hash = make_password(password) if password else None

        with transaction.atomic():
            category_ids, new_categories = self._seed_categories(categories, now)
            if new_categories:
                bump_on_commit(*CATEGORY_WRITES)
        self.progress = Progress(
            self.stderr, total=users + products, enabled=options["verbosity"] >= 1
        )
        try:
            new_users, new_products = self._seed_rows(
                users, products, seed, now, password_hash, category_ids
            )
        finally:
            self.progress.close()
        if new_users or new_products:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE accounts_user")
                cursor.execute("ANALYZE catalog_product")
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

    def _seed_rows(
        self,
        users: int,
        products: int,
        seed: int,
        now: datetime,
        password_hash: str | None,
        category_ids: list[int],
    ) -> tuple[int, int]:
        """Add the missing demo users, then products; return how many of each."""
        new_users = 0
        for start in range(0, users, CHUNK_ROWS):
            with transaction.atomic():
                stop = min(start + CHUNK_ROWS, users)
                added = self._insert(
                    "accounts_user",
                    _USER_COLUMNS,
                    functools.partial(
                        self._user_rows, start, stop, seed, now, password_hash
                    ),
                    key="lower(email)",
                    key_range=(demo_email(start), demo_email(stop - 1), stop - start),
                    key_pattern=DEMO_EMAIL_PATTERN,
                    done=start,
                )
                new_users += added
                if added:
                    # COPY sends no signal: each committed chunk refreshes the
                    # cached reads itself, so an interrupted run leaves none stale.
                    bump_on_commit(*user_writes(created=True))
        owner_ids = self._owner_ids(users) if products else []
        if products and not owner_ids:
            raise CommandError("Products need an owner: pass --users 1 or more.")
        new_products = 0
        for start in range(0, products, CHUNK_ROWS):
            with transaction.atomic():
                stop = min(start + CHUNK_ROWS, products)
                added = self._insert(
                    "catalog_product",
                    _PRODUCT_COLUMNS,
                    functools.partial(
                        self._product_rows,
                        start,
                        stop,
                        seed,
                        now,
                        category_ids,
                        owner_ids,
                    ),
                    key="sku",
                    key_range=(demo_sku(start), demo_sku(stop - 1), stop - start),
                    key_pattern=DEMO_SKU_PATTERN,
                    done=users + start,
                )
                new_products += added
                if added:
                    bump_on_commit(*product_writes(created=True))
        return new_users, new_products

    def _seed_categories(self, count: int, now: datetime) -> tuple[list[int], int]:
        names = []
        for i in range(count):
            base = CATEGORY_NAMES[i % len(CATEGORY_NAMES)]
            round_ = i // len(CATEGORY_NAMES)
            names.append(base if round_ == 0 else f"{base} {round_ + 1}")
        slugs = [slugify(name) for name in names]
        if not names:
            return [], 0
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO catalog_category (name, slug, created_at, updated_at)"
                " SELECT n, s, %s, %s FROM unnest(%s::text[], %s::text[]) AS t(n, s)"
                " ON CONFLICT (slug) DO NOTHING",
                [now - TWO_YEARS, now, names, slugs],
            )
            created = cursor.rowcount
            cursor.execute(
                "SELECT slug, id FROM catalog_category WHERE slug = ANY(%s)", [slugs]
            )
            ids = dict(cursor.fetchall())
        return [ids[slug] for slug in slugs], created

    def _owner_ids(self, users: int) -> list[int]:
        with connection.cursor() as cursor:
            if users:
                cursor.execute(
                    "SELECT id FROM accounts_user WHERE lower(email) = ANY(%s)"
                    " ORDER BY lower(email)",
                    [[demo_email(i) for i in range(users)]],
                )
            else:
                cursor.execute(
                    "SELECT id FROM accounts_user WHERE is_active"
                    " ORDER BY id LIMIT 1000"
                )
            return [row[0] for row in cursor.fetchall()]

    def _insert(
        self,
        table: str,
        columns: tuple[str, ...],
        make_rows: Callable[[], Iterator[tuple[Any, ...]]],
        *,
        key: str,
        key_range: tuple[str, str, int],
        key_pattern: str,
        done: int,
    ) -> int:
        """Add the rows whose keys are not in *table* yet; return how many.

        *key_range* is the chunk's first and last key and its size: a chunk
        fully present is skipped without generating its rows. *done* is the
        count of rows of the run before this chunk, for the progress bar.
        """
        cols = ", ".join(columns)
        first, last, wanted = key_range
        with connection.cursor() as cursor:
            # Demo keys are fixed-width, so a chunk's keys sort inside this range;
            # the pattern leaves out other keys that happen to sort there.
            cursor.execute(
                f"SELECT count(*) FROM {table}"  # noqa: S608
                f" WHERE {key} BETWEEN %s AND %s AND {key} ~ %s",
                [first, last, key_pattern],
            )
            present = cursor.fetchone()[0]
        counted_exactly = all(re.match(key_pattern, k) for k in (first, last))
        if present == wanted and counted_exactly:
            self.progress.update(done + wanted, done + wanted)
            return 0
        if not present:
            # None exists yet: COPY straight into the table, the fastest path.
            try:
                with transaction.atomic():
                    counted = _Counter(make_rows(), self.progress, done)
                    copy_rows(table, columns, counted)
                    self.progress.update(done + wanted, done + wanted)
                    return counted.count
            except IntegrityError:
                pass  # Taken meanwhile, or a demo username in use: go the safe way.
        # Stage in a temporary twin (column types only, so no id is consumed)
        # and add the rows that collide with no unique key.
        stage = f"seed_{table}"
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE {stage} AS SELECT {cols}"  # noqa: S608
                f" FROM {table} WITH NO DATA"
            )
        copy_rows(stage, columns, _Counter(make_rows(), self.progress, done))
        self.progress.update(done + wanted, done + wanted)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"  # noqa: S608
                " ON CONFLICT DO NOTHING"
            )
            inserted = cursor.rowcount
            cursor.execute(f"DROP TABLE {stage}")
        return inserted

    def _user_rows(
        self,
        start: int,
        stop: int,
        seed: int,
        now: datetime,
        password_hash: str | None,
    ) -> Iterator[tuple[Any, ...]]:
        for i in range(start, stop):
            rng = random.Random(f"user-{seed}-{i}")  # noqa: S311 - demo data
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            created = now - _age(rng)
            password = password_hash or f"!{rng.getrandbits(160):040x}"
            yield (
                demo_email(i),
                f"{first}.{last}.{i}",
                password,
                rng.random() > 0.03,
                False,
                False,
                created,
                created,
            )

    def _product_rows(
        self,
        start: int,
        stop: int,
        seed: int,
        now: datetime,
        category_ids: list[int],
        owner_ids: list[int],
    ) -> Iterator[tuple[Any, ...]]:
        for i in range(start, stop):
            rng = random.Random(f"product-{seed}-{i}")  # noqa: S311 - demo data
            adjective, material = rng.choice(ADJECTIVES), rng.choice(MATERIALS)
            noun = rng.choice(NOUNS).replace("-", " ")
            name = f"{adjective} {material} {noun}"
            sku = demo_sku(i)
            # Log-normal prices: mostly tens of dollars, a long tail of pricey ones.
            whole = min(int(rng.lognormvariate(3.3, 1.1)), 99_999)
            price = Decimal(whole) + Decimal(rng.choice(PRICE_CENTS))
            roll = rng.random()
            if roll < 0.08:
                stock = 0
            elif roll < 0.2:
                stock = rng.randint(1, 9)
            else:
                stock = rng.randint(10, 500)
            description = (
                f"A {adjective.lower()} {noun.lower()} in {material.lower()},"
                f" {rng.choice(FEATURES)} and {rng.choice(FEATURES)}."
            )
            created = now - _age(rng)
            yield (
                sku,
                name,
                f"{slugify(name)}-{i}",
                description,
                price,
                stock,
                rng.random() > 0.05,
                rng.choice(category_ids),
                rng.choice(owner_ids),
                created,
                created + (now - created) * rng.random() * 0.1,
            )
