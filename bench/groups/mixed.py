"""mixed: a signed-in client's mix of list, detail, profile and category reads."""

from __future__ import annotations

import argparse

from bench.harness import Harness


def run(h: Harness, args: argparse.Namespace) -> None:
    """Load 40% lists, 40% details, 10% /users/me/, 10% categories with a JWT."""
    headers = h.signed_in("user", f"{h.api}/users/me/", "mixed reads")
    if headers is None:
        return
    h.load(
        "mixed reads (JWT, warm cache)",
        _paths(h),
        headers=headers,
        notes=[
            "40% list, 40% detail of 2,000 products, 10% /users/me/, 10% categories"
        ],
    )


def _paths(h: Harness) -> list[str]:
    api, sample = h.api, h.sample
    categories = sample.category_ids
    paths = []
    for i in range(4000):
        kind = i % 10
        if kind < 4:
            paths.append(
                f"{api}/products/?category={categories[i % len(categories)]}"
                f"&limit=20&offset={20 * (i % 5)}"
            )
        elif kind < 8:
            paths.append(f"{api}/products/{sample.product_ids[i % 2000]}/")
        elif kind == 8:
            paths.append(f"{api}/users/me/")
        else:
            paths.append(f"{api}/categories/")
    return paths
