"""scale (issue 16): what must stay flat from 1M to 10M products.

Lone uncached requests, one at a time with the Redis cache flushed before
each, so the figure is the server's own time (X-Process-Time, median): the
reads of the API, its search, the admin changelist and its searches, the
dashboard; then the server's peak memory, and import_products of the full
export against COPYs of the same file (a plain table, a B-tree-indexed twin,
a same-shape twin).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import time
import urllib.parse
from pathlib import Path

from bench.groups.imports import (
    SAME_SHAPE_NOTE,
    _copy_indexed,
    _copy_plain,
    _copy_same_shape,
    _timed_import,
    _truncate_products,
)
from bench.harness import Harness
from bench.report import Row, target
from bench.stack import RESULTS_DIR

# Requests per case; the row shows their median server time.
LONE = 9
COMMON_WORD = "walnut"  # in one product name of 15 (seed_demo's materials)
RARE_WORD = "quokka"  # in RARE_PRODUCTS bench-made products only
RARE_PRODUCTS = 20
SKU_PREFIX = "DEMO-00012"  # seed_demo SKUs DEMO-0001200 .. DEMO-0001299
RARE_SKU = "BENCH-RARE-"  # bench.data.remove_leftovers deletes BENCH- SKUs


def run(h: Harness, args: argparse.Namespace) -> None:
    """Time the lone reads on the main server, then (--scale-import) the import."""
    reads(h)
    if args.scale_import:
        imports(h)


def reads(runner: Harness) -> None:
    """Time the reads, searches, admin pages and dashboard one request at a time."""
    sample = runner.sample
    assert sample is not None
    api = runner.api
    _add_rare_products(runner)
    try:
        ids = sample.product_ids[:LONE]
        categories = [
            sample.category_ids[i % len(sample.category_ids)] for i in range(LONE)
        ]
        search = f"{api}/products/?limit=20&search="
        api_cases = [
            ("detail", [f"{api}/products/{pk}/" for pk in ids], 30),
            (
                "list by category",
                [f"{api}/products/?category={c}&limit=20" for c in categories],
                30,
            ),
            ("list by price", [f"{api}/products/?ordering=price&limit=20"] * LONE, 30),
            ("cursor page at half depth", [_half_depth_cursor(runner)] * LONE, 30),
            (f"search common word ({COMMON_WORD})", [search + COMMON_WORD] * LONE, 150),
            (f"search rare word ({RARE_WORD})", [search + RARE_WORD] * LONE, 50),
            (f"search SKU prefix ({SKU_PREFIX})", [search + SKU_PREFIX] * LONE, 50),
        ]
        for name, paths, limit in api_cases:
            _lone(runner, f"scale: {name}", paths, limit)
        admin = "/admin/catalog/product/"
        sku = urllib.parse.quote(sample.skus[0])
        admin_cases = [
            ("changelist", admin),
            ("search by SKU", f"{admin}?q={sku}"),
            (f"search common word ({COMMON_WORD})", f"{admin}?q={COMMON_WORD}"),
            (f"search rare word ({RARE_WORD})", f"{admin}?q={RARE_WORD}"),
        ]
        for name, path in admin_cases:
            _lone(
                runner,
                f"scale: admin {name}",
                [path] * LONE,
                500,
                runner.admin_cookie(),
            )
        _lone(
            runner,
            "scale: dashboard uncached",
            [f"{api}/analytics/dashboard/"] * LONE,
            30,
            runner.bearer("staff"),
        )
    finally:
        _remove_rare_products(runner)
    peak = _server_peak_rss_mb(runner.base_url)
    if peak:
        runner.add(
            Row(
                "scale: server peak RSS (largest process)",
                notes=[
                    f"{max(peak):,.0f} MB; {len(peak)} processes,"
                    f" {sum(peak):,.0f} MB in all",
                    target(max(peak), 300, below=True, label="memory MB"),
                ],
            )
        )


def imports(runner: Harness) -> None:
    """Export the catalog, COPY the file into a plain table, import it: rates, memory.

    The catalog is emptied and re-created by the import from the export (the
    same SKUs, names, prices, stock, categories and owners; new ids and today's
    dates), so the database keeps its size for the next run.
    """
    stack = runner.stack
    size = runner.size
    csv_path = RESULTS_DIR / f"scale-products-{size.products}.csv"
    started = time.perf_counter()
    stack.manage("export_products", "--output", str(csv_path))
    export_s = time.perf_counter() - started
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle))
        plain = _copy_plain(stack, csv_path, header)
        btree = _copy_indexed(stack, csv_path, header, gin=False)
        same = _copy_same_shape(stack, csv_path, header)
        runner.add(
            Row(
                f"scale: COPY of the export ({size.products:,} rows), plain table",
                rate=plain,
                unit="rows/s",
                notes=[
                    f"export_products took {export_s:.0f} s"
                    f" ({csv_path.stat().st_size / 1e6:,.0f} MB)"
                ],
            )
        )
        runner.add(
            Row(
                "scale: COPY of the export into a B-tree-indexed twin",
                rate=btree,
                unit="rows/s",
                notes=["the x COPY target's reference (no GIN index)"],
            )
        )
        runner.add(
            Row(
                "scale: COPY of the export into a same-shape twin, indexes built after",
                rate=same,
                unit="rows/s",
                notes=[SAME_SHAPE_NOTE],
            )
        )
        _truncate_products(stack)
        seconds, peak_mb, summary = _timed_import(stack, csv_path)
    finally:
        csv_path.unlink(missing_ok=True)
    with stack.connect() as conn:
        conn.execute("ANALYZE catalog_product")
    rate = size.products / seconds
    runner.add(
        Row(
            f"scale: import_products of the export ({size.products:,} rows)",
            rate=rate,
            unit="rows/s",
            notes=[
                f"{seconds:.0f} s wall, into an emptied catalog",
                f"{rate / plain:.2f}x plain COPY",
                f"{rate / btree:.2f}x B-tree-indexed COPY",
                target(rate / btree, 0.4, below=False, label="x COPY"),
                f"{rate / same:.2f}x same-shape COPY",
                f"peak RSS {peak_mb:,.0f} MB",
                target(peak_mb, 300, below=True, label="memory MB"),
                summary,
            ],
        )
    )


def _lone(
    runner: Harness,
    scenario: str,
    paths: list[str],
    limit_ms: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Add a row: median server ms of *paths*, each alone on a flushed cache."""
    server_ms, _, responses = runner.probe(paths, headers, flush_each=True)
    bad = sorted({r.status for r in responses if r.status != 200})
    if bad or server_ms is None:
        runner.skip(scenario, f"answered {bad or 'without X-Process-Time'}")
        return
    runner.add(
        Row(
            scenario,
            server_ms=server_ms,
            notes=[
                f"median of {len(paths)} lone requests, Redis flushed before each",
                target(server_ms, limit_ms, below=True, label="server ms"),
            ],
        )
    )


def _half_depth_cursor(runner: Harness) -> str:
    """Return the list path whose cursor points at the middle of the active catalog."""
    with runner.stack.connect() as conn:
        total = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'catalog_product'"
        ).fetchone()[0]
        created, pk = conn.execute(
            "SELECT created_at, id FROM catalog_product WHERE is_active"
            " ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            [max(int(total) // 2, 0)],
        ).fetchone()
    # config.api.pagination.KeysetCursorPagination's token for that row.
    payload = {"o": "-created_at,-id", "v": [created.isoformat(), pk], "r": False}
    token = base64.urlsafe_b64encode(
        json.dumps(payload, separators=(",", ":")).encode()
    )
    return f"{runner.api}/products/?limit=20&cursor={token.decode()}"


def _add_rare_products(runner: Harness) -> None:
    """Insert RARE_PRODUCTS products whose name holds RARE_WORD (raw SQL)."""
    sample = runner.sample
    assert sample is not None
    with runner.stack.connect() as conn:
        conn.execute(
            "INSERT INTO catalog_product (sku, name, slug, description, price, stock,"
            " is_active, category_id, owner_id, created_at, updated_at)"
            " SELECT %s || g, 'Quokka ' || g, 'quokka-' || g, 'A rare find.', 10, 5,"
            " true, %s, %s, now() - g * interval '30 days', now()"
            " FROM generate_series(1, %s) AS g",
            [RARE_SKU, sample.category_ids[0], sample.staff_id, RARE_PRODUCTS],
        )
    runner.stack.flush_cache()


def _remove_rare_products(runner: Harness) -> None:
    with runner.stack.connect() as conn:
        conn.execute("DELETE FROM catalog_product WHERE sku LIKE %s", [RARE_SKU + "%"])
    runner.stack.flush_cache()


def _server_peak_rss_mb(base_url: str) -> list[float]:
    """Return the peak RSS (VmHWM) in MB of each process serving *base_url*."""
    port = urllib.parse.urlsplit(base_url).port
    marker = f"GRANIAN_PORT={port}".encode()
    peaks = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdecimal():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return peaks
