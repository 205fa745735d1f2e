"""Deterministic demo data for seed_demo: users, categories and products as rows.

Each row's random draws come from one BLAKE2b digest of the run's seed and
the row's index, so any range of rows can be made alone and always comes out
the same. (A ``random.Random`` per row, seeded the same way, cost 1.4 times
as much: its seeding and ``choice()`` calls were half of a row's making.)
The words come from the text files in ``catalog/data/``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from statistics import NormalDist
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
# Uniform draws per row: 32-bit slices of one 64-byte digest.
_DRAWS = struct.Struct("<16I")
_SCALE = 1 / 2**32
_NORMAL_INV = NormalDist().inv_cdf
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


def _draws(key: str) -> list[float]:
    """Return 16 uniform draws in (0, 1), fixed by *key*."""
    digest = hashlib.blake2b(key.encode(), digest_size=64).digest()
    return [(x + 0.5) * _SCALE for x in _DRAWS.unpack(digest)]


def _pick(items: Sequence[Any], draw: float) -> Any:
    return items[int(draw * len(items))]


def _age(draw: float) -> timedelta:
    # Squaring a uniform draw skews towards recent dates, like a growing shop:
    # about 20% of rows fall in the last 30 days, the rest over two years.
    return TWO_YEARS * (draw**2)


def user_rows(
    start: int, stop: int, *, seed: int, now: datetime, password_hash: str | None
) -> Iterator[tuple[Any, ...]]:
    """Yield demo users *start* to *stop* as accounts.services.users_add rows."""
    first_names, last_names = words("first_names"), words("last_names")
    for i in range(start, stop):
        key = f"user-{seed}-{i}"
        draws = _draws(key)
        first, last = _pick(first_names, draws[0]), _pick(last_names, draws[1])
        created = now - _age(draws[2])
        # Unusable ("!" prefix) and unguessable without the key.
        password = password_hash or (
            "!"
            + hashlib.blake2b(key.encode(), digest_size=20, person=b"pw").hexdigest()
        )
        yield (
            demo_email(i),
            f"{first}.{last}.{i}",
            password,
            draws[3] > 0.03,
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
        (
            d_adjective,
            d_material,
            d_noun,
            d_price,
            d_cents,
            d_roll,
            d_stock,
            d_feature1,
            d_feature2,
            d_age,
            d_updated,
            d_active,
            d_category,
            d_owner,
            *_,
        ) = _draws(f"product-{seed}-{i}")
        adjective, material = (
            _pick(adjectives, d_adjective),
            _pick(materials, d_material),
        )
        noun = _pick(nouns, d_noun)
        name = f"{adjective} {material} {noun}"
        if (slug := slugs.get(name)) is None:
            slug = slugs[name] = slugify(name)
        # Log-normal prices: mostly tens of dollars, a long tail of pricey ones.
        whole = min(int(math.exp(3.3 + 1.1 * _NORMAL_INV(d_price))), 99_999)
        price = f"{whole}{_pick(_CENTS, d_cents)}"
        if d_roll < 0.08:
            stock = 0
        elif d_roll < 0.2:
            stock = 1 + int(d_stock * 9)
        else:
            stock = 10 + int(d_stock * 491)
        description = (
            f"A {lower[adjective]} {lower[noun]} in {lower[material]},"
            f" {_pick(features, d_feature1)} and {_pick(features, d_feature2)}."
        )
        created = now - _age(d_age)
        yield (
            demo_sku(i),
            name,
            f"{slug}-{i}",
            description,
            price,
            stock,
            d_active > 0.05,
            _pick(category_ids, d_category),
            _pick(owner_ids, d_owner),
            created,
            created + (now - created) * (d_updated * 0.1),
        )
