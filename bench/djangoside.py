"""Helpers that need Django itself, run in a subprocess with the bench environment.

`python -m bench.djangoside ensure-users` creates or refreshes the bench's staff
and regular accounts; `python -m bench.djangoside row-by-row FILE N [--tail]`
saves the first (or last) N rows of an export file with one `Product.save()`
each, in autocommit (the baseline the importer is compared with);
`mix-users N` creates the mix's N users and `mix-pool N RUN` gives them N more
products for the mix's updates and deletes (bench/mix.py); `create-cost N
PREFIX` times N API creates in process (bench/stats_cost.py);
`deferred-indexes` names the product indexes an import into an empty catalog
drops and builds after the load, and the settings of those builds. Each prints
one JSON line.
"""

from __future__ import annotations

import collections
import csv
import itertools
import json
import os
import statistics
import sys
import time


def ensure_users() -> dict:
    """Create or refresh the bench's staff and regular accounts."""
    from accounts.models import User
    from bench.stack import BENCH_PASSWORD, BENCH_STAFF_EMAIL, BENCH_USER_EMAIL

    ids = {}
    for email, staff in ((BENCH_STAFF_EMAIL, True), (BENCH_USER_EMAIL, False)):
        user = User.objects.filter(email=email).first() or User(
            email=email, username=email.split("@")[0]
        )
        user.is_active = True
        user.is_staff = user.is_superuser = staff
        if not user.has_usable_password() or not user.check_password(BENCH_PASSWORD):
            user.set_password(BENCH_PASSWORD)
        user.save()
        ids["staff" if staff else "user"] = user.pk
    return ids


def mix_users(count: int) -> dict:
    """Create the mix's *count* users (one password hash, copied); return their ids."""
    from django.contrib.auth.hashers import make_password

    from accounts.models import User
    from bench.mix import mix_email
    from bench.stack import BENCH_PASSWORD

    password = make_password(BENCH_PASSWORD)
    users = User.objects.bulk_create(
        User(email=mix_email(i), username=mix_email(i).split("@")[0], password=password)
        for i in range(count)
    )
    return {"ids": [user.pk for user in users]}


def mix_pool(count: int, run: str) -> dict:
    """Give the mix's users *count* products between them, through the bulk service."""
    from accounts.models import User
    from bench.mix import MIX_EMAIL_PREFIX
    from catalog.models import Category
    from catalog.services import products_bulk_create

    owners = list(
        User.objects.filter(email__startswith=MIX_EMAIL_PREFIX).order_by("email")
    )
    categories = list(Category.objects.values_list("pk", flat=True))
    created = 0
    for index, owner in enumerate(owners):
        share = count // len(owners) + (index < count % len(owners))
        items = [
            {
                "sku": f"BENCH-MIX-P-{run}-{owner.pk}-{i}",
                "name": f"Mix pool product {i}",
                "description": "Made by the bench mix.",
                "price": f"{10 + i % 90}.50",
                "stock": i % 40,
                "category": categories[(index + i) % len(categories)],
            }
            for i in range(share)
        ]
        if items:
            created += len(products_bulk_create(owner=owner, items=items))
    return {"created": created}


def row_by_row(path: str, limit: int, *, tail: bool = False) -> dict:
    """Save *limit* rows of a product export, one save() per row.

    The first rows by default; with *tail*, the last ones, whose products are
    deleted first (untimed), so they are saved into an otherwise full catalog.
    """
    from decimal import Decimal

    from accounts.models import User
    from catalog.models import Category, Product

    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        rows = (
            list(collections.deque(reader, maxlen=limit))
            if tail
            else list(itertools.islice(reader, limit))
        )
    if tail:
        Product.objects.filter(sku__in=[r["sku"] for r in rows]).delete()
    # Categories and owners are looked up before the clock starts: only the
    # saves are timed, which makes this baseline as fast as it can be.
    categories = {
        c.slug: c
        for c in Category.objects.filter(slug__in={r["category"] for r in rows})
    }
    owners = {
        u.email.lower(): u
        for u in User.objects.filter(
            email__lower__in={r["owner"].lower() for r in rows}
        )
    }
    started = time.perf_counter()
    for row in rows:
        Product(
            sku=row["sku"],
            name=row["name"],
            slug=row.get("slug") or "",
            description=row.get("description") or "",
            price=Decimal(row["price"]),
            stock=int(row.get("stock") or 0),
            is_active=(row.get("is_active") or "true").lower()
            in {"1", "true", "t", "yes"},
            category=categories[row["category"]],
            owner=owners[row["owner"].lower()],
        ).save()
    saved = len(rows)
    return {"rows": saved, "seconds": time.perf_counter() - started}


def create_cost(count: int, sku_prefix: str) -> dict:
    """Create *count* products through the API in process; median CPU and wall ms."""
    from django.test import Client
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from bench.stack import BENCH_STAFF_EMAIL
    from catalog.models import Category

    staff = User.objects.get(email=BENCH_STAFF_EMAIL)
    client = Client(
        headers={"Authorization": f"Bearer {AccessToken.for_user(staff)}"},
        HTTP_HOST="127.0.0.1",
    )
    category = Category.objects.order_by("pk").values_list("pk", flat=True)[0]
    url = f"/{os.environ.get('API_PREFIX', '/api/v1').strip('/')}/products/"
    run = os.urandom(3).hex().upper()
    cpu, wall = [], []
    for n in range(count):
        body = {
            "sku": f"{sku_prefix}{run}-{n}",
            "name": "Stats cost probe",
            "price": "9.99",
            "stock": n % 20,
            "category": category,
        }
        started_cpu, started = time.thread_time(), time.perf_counter()
        response = client.post(url, body, content_type="application/json")
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started)
        if response.status_code != 201:
            raise RuntimeError(
                f"create answered {response.status_code}: {response.content[:300]!r}"
            )
    return {
        "cpu_ms": statistics.median(cpu) * 1000,
        "wall_ms": statistics.median(wall) * 1000,
    }


def deferred_indexes() -> dict:
    """Name the product indexes import_products defers, and how it builds them."""
    from catalog.models import Product
    from config import indexes

    return {
        "names": [index.name for index in indexes.deferrable_indexes(Product)],
        "memory": indexes.INDEX_BUILD_MEMORY,
        "workers": indexes.INDEX_BUILD_WORKERS,
    }


def main(argv: list[str]) -> int:
    """Dispatch to the helper named by argv[0]."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    if argv[0] == "ensure-users":
        result = ensure_users()
    elif argv[0] == "mix-users":
        result = mix_users(int(argv[1]))
    elif argv[0] == "mix-pool":
        result = mix_pool(int(argv[1]), argv[2])
    elif argv[0] == "create-cost":
        result = create_cost(int(argv[1]), argv[2])
    elif argv[0] == "deferred-indexes":
        result = deferred_indexes()
    elif argv[0] == "row-by-row":
        result = row_by_row(argv[1], int(argv[2]), tail="--tail" in argv[3:])
    else:
        raise SystemExit(f"unknown helper {argv[0]!r}")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
