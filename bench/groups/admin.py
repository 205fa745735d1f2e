"""admin: the product changelist, both searches and the change form as staff."""

from __future__ import annotations

import argparse
import urllib.parse

from bench.harness import Harness
from bench.report import target

BASE = "/admin/catalog/product/"


def run(h: Harness, args: argparse.Namespace) -> None:
    """Load each admin page with a staff session; note the server-time target."""
    cookie = h.admin_cookie()
    connections = h.options.admin_connections
    for scenario, paths in _cases(h):
        row = h.load(
            scenario,
            paths,
            headers=cookie,
            connections=connections,
            notes=[f"staff session, wrk -c{connections}"],
        )
        if row.server_ms is not None:
            row.notes.append(target(row.server_ms, 500, below=True, label="server ms"))


def _cases(h: Harness) -> list[tuple[str, list[str]]]:
    sample = h.sample
    prefixes = [_name_prefix(name) for name in sample.names[:500]]
    return [
        ("admin product changelist", [BASE]),
        (
            "admin search by sku",
            [f"{BASE}?q={urllib.parse.quote(sku)}" for sku in sample.skus[:500]],
        ),
        (
            "admin search by name prefix",
            [f"{BASE}?q={urllib.parse.quote(p)}" for p in prefixes if p],
        ),
        (
            "admin product change form",
            [f"{BASE}{pk}/change/" for pk in sample.product_ids[:500]],
        ),
    ]


def _name_prefix(name: str) -> str:
    word = name.split()[0] if name.split() else ""
    return word[: max(3, min(len(word), 6))]
