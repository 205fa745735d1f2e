"""products: bulk create, update and delete of 1,000 against single requests."""

from __future__ import annotations

import argparse
import statistics
import uuid

from bench import data
from bench.client import Client, Response
from bench.groups import cache
from bench.harness import BULK_SIZE, Harness, bulk_row, error_note
from bench.report import Row, percentile, target

PHASES = ("create", "update", "delete")
BULK_OK = {"create": 201, "update": 200, "delete": 200}
SINGLE_OK = {"create": 201, "update": 200, "delete": 204}
BULK_LIMIT_MS = {"create": 180, "update": 145, "delete": 125}


def run(h: Harness, args: argparse.Namespace) -> None:
    """Time both write paths; also the uncached list unless the cache group ran it."""
    _bulk_versus_single(h)
    cache.list_uncached(h)


def _bulk_versus_single(h: Harness) -> None:
    try:
        headers = h.bearer("staff")
    except RuntimeError as exc:
        h.skip("products bulk", str(exc))
        return
    client = h.client(headers)
    bulk: dict[str, list[Response]] = {phase: [] for phase in PHASES}
    singles: dict[str, list[Response]] = {phase: [] for phase in PHASES}
    run_id = uuid.uuid4().hex[:8].upper()
    try:
        for rep in range(h.options.bulk_repeat):
            if not _bulk_round(h, client, f"{run_id}-{rep}", bulk):
                return
        _single_rounds(h, client, f"{run_id}-S", singles)
    finally:
        client.close()
        data.remove_leftovers(h.stack)
        h.stack.flush_cache()
    for phase in PHASES:
        _add_phase(h, phase, bulk[phase], singles[phase])


def _item(h: Harness, sku: str, i: int, **fields: object) -> dict[str, object]:
    categories = h.sample.category_ids
    return {
        "sku": sku,
        "description": "Made by the benchmark harness.",
        "category": categories[i % len(categories)],
        **fields,
    }


def _bulk_round(
    h: Harness, client: Client, key: str, phases: dict[str, list[Response]]
) -> bool:
    """Create, update and delete BULK_SIZE products in three requests."""
    url = f"{h.api}/products/bulk/"
    items = [
        _item(
            h,
            f"BENCH-{key}-{i:04d}",
            i,
            name=f"Bench product {i}",
            price=f"{10 + i % 90}.{i % 100:02d}",
            stock=i % 50,
        )
        for i in range(BULK_SIZE)
    ]
    created = client.request("POST", url, json_body=items)
    if created.status == 404:
        h.skip("products bulk", "POST /products/bulk/ answered 404")
        return False
    phases["create"].append(created)
    if created.status != 201:
        raise RuntimeError(f"bulk create: {created.status} {created.body[:300]!r}")
    ids = created.json()["ids"]  # type: ignore[index]
    changes = [
        {"id": pk, "price": f"{20 + i % 50}.50", "stock": 7 + i % 13}
        for i, pk in enumerate(ids)
    ]
    phases["update"].append(client.request("PATCH", url, json_body=changes))
    phases["delete"].append(client.request("DELETE", url, json_body={"ids": ids}))
    return True


def _single_rounds(
    h: Harness, client: Client, key: str, singles: dict[str, list[Response]]
) -> None:
    """Create, update and delete BULK_SIZE products one request each."""
    ids = []
    for i in range(BULK_SIZE):
        item = _item(
            h,
            f"BENCH-{key}-{i:04d}",
            i,
            name=f"Bench single {i}",
            price="12.34",
            stock=5,
        )
        response = client.request("POST", f"{h.api}/products/", json_body=item)
        singles["create"].append(response)
        if response.status == 201:
            ids.append(response.json()["id"])  # type: ignore[index]
    for pk in ids:
        singles["update"].append(
            client.request(
                "PATCH", f"{h.api}/products/{pk}/", json_body={"price": "13.50"}
            )
        )
    for pk in ids:
        singles["delete"].append(client.request("DELETE", f"{h.api}/products/{pk}/"))


def _add_phase(
    h: Harness, phase: str, bulk: list[Response], singles: list[Response]
) -> None:
    """Add a phase's bulk row (with its speed-up) and its single-requests row."""
    row = bulk_row(
        f"products bulk {phase} {BULK_SIZE:,}",
        bulk,
        ok=BULK_OK[phase],
        limit_ms=BULK_LIMIT_MS[phase],
    )
    single_total = sum(r.server_s or 0 for r in singles) * 1000
    if row.server_ms and single_total:
        speedup = single_total / row.server_ms
        row.notes.append(f"{speedup:.1f}x the single requests' server time")
        row.notes.append(target(speedup, 20, below=False, label="speed-up"))
    h.add(row)
    h.add(_single_row(f"products single {phase} x{BULK_SIZE:,}", singles, phase))


def _single_row(scenario: str, responses: list[Response], phase: str) -> Row:
    walls = [r.wall_s * 1000 for r in responses]
    server_total = sum(r.server_s or 0 for r in responses) * 1000
    errors = [r for r in responses if r.status != SINGLE_OK[phase]]
    notes = [f"{len(responses):,} requests one after another; server ms = their sum"]
    if errors:
        notes.append(error_note(errors[0]))
    wall_total = sum(r.wall_s for r in responses)
    return Row(
        scenario,
        rate=len(responses) / wall_total if wall_total else None,
        unit="req/s",
        p50_ms=statistics.median(walls) if walls else None,
        p99_ms=percentile(walls, 99) if walls else None,
        errors=len(errors),
        server_ms=server_total or None,
        notes=notes,
    )
