"""Deterministic demo data for seed_demo: users, categories and products as rows.

Each row comes from its own ``random.Random`` seeded by the run's seed and
the row's index, so any range of rows can be made alone and always comes out
the same. The words come from the text files in ``catalog/data/``.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.utils.text import slugify

DATA = Path(__file__).resolve().parent / "data"
PRICE_CENTS = ("0.99", "0.49", "0.00", "0.95", "0.50")
# The price's text after its whole part ("12" + ".99"): COPY parses text
# faster than psycopg formats a Decimal.
_CENTS = tuple(cents[1:] for cents in PRICE_CENTS)
TWO_YEARS = timedelta(days=730)
# Rounds of category names: "Books", "Books 2", ... "Books 100".
CATEGORY_ROUNDS = 100
DEMO_EMAIL_PATTERN = r"^demo[0-9]{6}@example\.com$"
DEMO_SKU_PATTERN = r"^DEMO-[0-9]{7}$"


@functools.cache
def words(name: str) -> tuple[str, ...]:
    """Return the non-empty lines of ``catalog/data/<name>.txt``, read once."""
    text = (DATA / f"{name}.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def demo_email(index: int) -> str:
    """Return the deterministic email of demo user *index*."""
    return f"demo{index:06d}@example.com"


def demo_sku(index: int) -> str:
    """Return the deterministic SKU of demo product *index*."""
    return f"DEMO-{index:07d}"


def max_categories() -> int:
    """Return how many distinct demo categories there can be."""
    return len(words("categories")) * CATEGORY_ROUNDS


def category_names(count: int) -> dict[str, str]:
    """Return {slug: name} of the first *count* demo categories, in order."""
    base = words("categories")
    names = {}
    for i in range(count):
        round_ = i // len(base)
        name = (
            base[i % len(base)]
            if round_ == 0
            else f"{base[i % len(base)]} {round_ + 1}"
        )
        names[slugify(name)] = name
    return names


def _age(rng: random.Random) -> timedelta:
    # Squaring a uniform draw skews towards recent dates, like a growing shop:
    # about 20% of rows fall in the last 30 days, the rest over two years.
    return TWO_YEARS * (rng.random() ** 2)


def user_rows(
    start: int, stop: int, *, seed: int, now: datetime, password_hash: str | None
) -> Iterator[tuple[Any, ...]]:
    """Yield demo users *start* to *stop* as accounts.services.users_add rows."""
    first_names, last_names = words("first_names"), words("last_names")
    for i in range(start, stop):
        rng = random.Random(f"user-{seed}-{i}")  # noqa: S311 - demo data
        first, last = rng.choice(first_names), rng.choice(last_names)
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


def product_rows(
    start: int,
    stop: int,
    *,
    seed: int,
    now: datetime,
    category_ids: list[int],
    owner_ids: list[int],
) -> Iterator[tuple[Any, ...]]:
    """Yield demo products *start* to *stop* as catalog.services.products_add rows."""
    adjectives, materials = words("adjectives"), words("materials")
    nouns = tuple(noun.replace("-", " ") for noun in words("nouns"))
    features = words("features")
    lower = {word: word.lower() for word in (*adjectives, *materials, *nouns)}
    # A few thousand distinct names: each slugified once.
    slugs: dict[str, str] = {}
    for i in range(start, stop):
        rng = random.Random(f"product-{seed}-{i}")  # noqa: S311 - demo data
        adjective, material = rng.choice(adjectives), rng.choice(materials)
        noun = rng.choice(nouns)
        name = f"{adjective} {material} {noun}"
        if (slug := slugs.get(name)) is None:
            slug = slugs[name] = slugify(name)
        # Log-normal prices: mostly tens of dollars, a long tail of pricey ones.
        whole = min(int(rng.lognormvariate(3.3, 1.1)), 99_999)
        price = f"{whole}{rng.choice(_CENTS)}"
        roll = rng.random()
        if roll < 0.08:
            stock = 0
        elif roll < 0.2:
            stock = rng.randint(1, 9)
        else:
            stock = rng.randint(10, 500)
        description = (
            f"A {lower[adjective]} {lower[noun]} in {lower[material]},"
            f" {rng.choice(features)} and {rng.choice(features)}."
        )
        created = now - _age(rng)
        yield (
            demo_sku(i),
            name,
            f"{slug}-{i}",
            description,
            price,
            stock,
            rng.random() > 0.05,
            rng.choice(category_ids),
            rng.choice(owner_ids),
            created,
            created + (now - created) * rng.random() * 0.1,
        )
