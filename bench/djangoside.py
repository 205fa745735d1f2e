"""Helpers that need Django itself, run in a subprocess with the bench environment.

`python -m bench.djangoside ensure-users` creates or refreshes the bench's staff
and regular accounts; `python -m bench.djangoside row-by-row FILE N` saves the
first N rows of an export file one `update_or_create` at a time (the baseline
the importer is compared with). Each prints one JSON line.
"""

from __future__ import annotations

import csv
import json
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


def row_by_row(path: str, limit: int) -> dict:
    """Save the first *limit* rows of a product export one row at a time."""
    from decimal import Decimal

    from accounts.models import User
    from catalog.models import Category, Product

    categories: dict[str, Category] = {}
    owners: dict[str, User] = {}
    saved = 0
    started = time.perf_counter()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            if saved >= limit:
                break
            slug = row["category"]
            if slug not in categories:
                categories[slug] = Category.objects.get_or_create(
                    slug=slug, defaults={"name": slug.replace("-", " ").title()}
                )[0]
            email = row["owner"]
            if email not in owners:
                owners[email] = User.objects.with_email(email).get()
            Product.objects.update_or_create(
                sku=row["sku"],
                defaults={
                    "name": row["name"],
                    "slug": row.get("slug", ""),
                    "description": row.get("description", ""),
                    "price": Decimal(row["price"]),
                    "stock": int(row["stock"]),
                    "is_active": row.get("is_active", "true").lower()
                    in {"1", "true", "t", "yes"},
                    "category": categories[slug],
                    "owner": owners[email],
                },
            )
            saved += 1
    return {"rows": saved, "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    """Dispatch to the helper named by argv[0]."""
    import django

    django.setup()
    if argv[0] == "ensure-users":
        result = ensure_users()
    elif argv[0] == "row-by-row":
        result = row_by_row(argv[1], int(argv[2]))
    else:
        raise SystemExit(f"unknown helper {argv[0]!r}")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
