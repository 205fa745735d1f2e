"""Seed the scratch database to a requested size (reusing it when it matches)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.stack import BENCH_EMAIL_DOMAIN, ROOT, Stack


@dataclass(frozen=True)
class Size:
    """The requested data set."""

    products: int
    users: int
    categories: int
    seed: int


def _counts(stack: Stack) -> tuple[int, int, int] | None:
    try:
        with stack.connect() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM catalog_product),"
                " (SELECT count(*) FROM accounts_user WHERE email NOT LIKE %s),"
                " (SELECT count(*) FROM catalog_category)",
                [f"%@{BENCH_EMAIL_DOMAIN}"],
            ).fetchone()
    except Exception:  # noqa: BLE001 - no database or no tables yet: reseed
        return None
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


def remove_leftovers(stack: Stack) -> None:
    """Delete rows bench runs made (bench-made SKUs, users and what they own).

    The two standing bench accounts stay. Raw SQL bypasses the app's cache
    invalidation: flush the scratch Redis database afterwards.
    """
    keep = [f"bench-staff@{BENCH_EMAIL_DOMAIN}", f"bench-user@{BENCH_EMAIL_DOMAIN}"]
    with stack.connect() as conn, conn.transaction():
        made = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM accounts_user WHERE email LIKE %s AND email <> ALL(%s)",
                [f"%@{BENCH_EMAIL_DOMAIN}", keep],
            )
        ]
        conn.execute(
            "DELETE FROM catalog_product WHERE sku LIKE 'BENCH-%%'"
            " OR owner_id = ANY(%s)",
            [made],
        )
        # Users who signed in (the mix's) have refresh tokens on record.
        conn.execute(
            "DELETE FROM token_blacklist_blacklistedtoken WHERE token_id IN"
            " (SELECT id FROM token_blacklist_outstandingtoken"
            " WHERE user_id = ANY(%s))",
            [made],
        )
        conn.execute(
            "DELETE FROM token_blacklist_outstandingtoken WHERE user_id = ANY(%s)",
            [made],
        )
        conn.execute("DELETE FROM accounts_user WHERE id = ANY(%s)", [made])


def prepare(stack: Stack, size: Size, *, log: callable) -> None:
    """Create, migrate and seed the scratch database unless it already has *size*."""
    wanted = (size.products, size.users, size.categories)
    counts = _counts(stack)
    if counts is not None:
        remove_leftovers(stack)
        counts = _counts(stack)
    if counts == wanted:
        log(
            f"reusing database {stack.database!r}: {counts[0]:,} products, "
            f"{counts[1]:,} users, {counts[2]} categories"
        )
        stack.manage("migrate", "--noinput", "-v", "0")
    else:
        log(f"seeding database {stack.database!r} (found {counts}, want {wanted})")
        stack.drop_database()
        stack.manage("ensure_database")
        stack.manage("migrate", "--noinput", "-v", "0")
        started = time.perf_counter()
        seed(stack, size)
        log(f"seeded in {time.perf_counter() - started:.1f} s")
    stack.manage("collectstatic", "--noinput", "-v", "0")
    django_side(stack, "ensure-users")


def seed(stack: Stack, size: Size) -> None:
    """Run seed_demo for *size* (it only adds what is missing), then VACUUM ANALYZE."""
    stack.manage(
        "seed_demo",
        f"--users={size.users}",
        f"--products={size.products}",
        f"--categories={size.categories}",
        f"--seed={size.seed}",
    )
    counts = _counts(stack)
    wanted = (size.products, size.users, size.categories)
    if counts != wanted:
        raise RuntimeError(f"seed_demo produced {counts}, expected {wanted}")
    with stack.connect() as conn:
        conn.execute("VACUUM ANALYZE")


def django_side(stack: Stack, *args: str) -> dict:
    """Run a `bench.djangoside` helper with the bench environment; return its JSON."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.djangoside", *args],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"bench.djangoside {args[0]} failed:\n{completed.stderr[-2000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Sample:
    """Existing rows the scenarios address: ids, SKUs, names, categories, users."""

    product_ids: list[int]
    skus: list[str]
    names: list[str]
    category_ids: list[int]
    user_ids: list[int]
    staff_id: int
    user_id: int


def sample(stack: Stack, *, products: int = 40_000, seed: int = 1) -> Sample:
    """Return a shuffled sample of active products and users of the scratch database."""
    with stack.connect() as conn:
        total = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'catalog_product'"
        ).fetchone()[0]
        percent = 100.0 if total <= 0 else min(100.0, products * 150.0 / total)
        rows = conn.execute(
            "SELECT id, sku, name FROM catalog_product"
            " TABLESAMPLE SYSTEM (%s) REPEATABLE (%s) WHERE is_active LIMIT %s",
            [percent, seed, products],
        ).fetchall()
        category_ids = [
            r[0]
            for r in conn.execute(
                "SELECT c.id FROM catalog_category c WHERE EXISTS"
                " (SELECT 1 FROM catalog_product p"
                " WHERE p.category_id = c.id AND p.is_active) ORDER BY c.id"
            )
        ]
        user_ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM accounts_user WHERE is_active AND NOT is_staff"
                " AND email NOT LIKE %s ORDER BY id LIMIT 5000",
                [f"%@{BENCH_EMAIL_DOMAIN}"],
            )
        ]
        staff_id, user_id = (
            conn.execute(
                "SELECT id FROM accounts_user WHERE email = %s", [email]
            ).fetchone()[0]
            for email in (
                f"bench-staff@{BENCH_EMAIL_DOMAIN}",
                f"bench-user@{BENCH_EMAIL_DOMAIN}",
            )
        )
    rng = random.Random(seed)
    rng.shuffle(rows)
    rng.shuffle(user_ids)
    if not rows or not category_ids:
        raise RuntimeError("the scratch database has no active products to address")
    return Sample(
        product_ids=[r[0] for r in rows],
        skus=[r[1] for r in rows],
        names=[r[2] for r in rows],
        category_ids=category_ids,
        user_ids=user_ids,
        staff_id=staff_id,
        user_id=user_id,
    )
