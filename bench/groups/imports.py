"""import: import_products (create, then update) against COPY and row-by-row saves."""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import data
from bench.harness import Harness
from bench.report import Row, target
from bench.stack import RESULTS_DIR, ROOT, Stack

# COPY into a plain table: the file's own columns, typed, no index.
PLAIN_TYPES = {
    "id": "bigint",
    "price": "numeric(12,2)",
    "stock": "integer",
    "is_active": "boolean",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}


@dataclass
class Baselines:
    """The rates the import is compared with, rows/s."""

    plain: float
    btree: float
    gin: float
    same: float
    save_empty: float
    save_whole: float = 0.0


def run(h: Harness, args: argparse.Namespace) -> None:
    """Export, COPY three ways, save row by row, then import twice; add the rows."""
    csv_path = RESULTS_DIR / f"products-{h.size.products}.csv"
    header = _export(h, csv_path)
    plain, btree, gin, same = _copies(h, csv_path, header)
    h.after_report.append(lambda: _restore(h))
    _truncate_products(h.stack)
    base = Baselines(plain, btree, gin, same, save_empty=_save_empty(h, csv_path))
    _truncate_products(h.stack)
    _import(h, csv_path, "create", base)
    _import(h, csv_path, "update", base)


def _export(h: Harness, csv_path: Path) -> list[str]:
    """Time export_products into *csv_path*; return the file's header."""
    started = time.perf_counter()
    h.stack.manage("export_products", "--output", str(csv_path))
    seconds = time.perf_counter() - started
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle))
    h.add(
        Row(
            f"export_products {h.size.products:,} rows (CSV)",
            rate=h.size.products / seconds,
            unit="rows/s",
            notes=[f"{seconds:.1f} s, {csv_path.stat().st_size / 1e6:,.0f} MB"],
        )
    )
    return header


def _copies(
    h: Harness, csv_path: Path, header: list[str]
) -> tuple[float, float, float, float]:
    """Add and return COPY's rates: plain, B-tree-indexed, fully indexed and
    same-shape twin."""
    cases = [
        (
            "COPY of the same file into a plain table",
            lambda: _copy_plain(h.stack, csv_path, header),
            "psycopg COPY FROM STDIN; typed columns, no index",
        ),
        (
            "COPY of the same file into a B-tree-indexed twin",
            lambda: _copy_indexed(h.stack, csv_path, header, gin=False),
            "a table LIKE catalog_product INCLUDING INDEXES, GIN ones"
            " dropped (pk, unique sku, filter/order B-trees)",
        ),
        (
            "COPY of the same file into a fully indexed twin",
            lambda: _copy_indexed(h.stack, csv_path, header, gin=True),
            "as above plus the full-text GIN index (the twin's search_document"
            " is a plain empty column): the x COPY target uses it",
        ),
        (
            "COPY of the same file into a same-shape twin, indexes built after",
            lambda: _copy_same_shape(h.stack, csv_path, header),
            SAME_SHAPE_NOTE,
        ),
    ]
    rates = []
    for scenario, copy, note in cases:
        rates.append(copy())
        h.add(Row(scenario, rate=rates[-1], unit="rows/s", notes=[note]))
    plain, btree, gin, same = rates
    return plain, btree, gin, same


def _save_empty(h: Harness, csv_path: Path) -> float:
    """Add and return the rate of Product.save() per row into an empty catalog."""
    one = data.django_side(
        h.stack, "row-by-row", str(csv_path), str(h.options.row_sample)
    )
    rate = one["rows"] / one["seconds"]
    h.add(
        Row(
            "Product.save() one row at a time, empty catalog",
            rate=rate,
            unit="rows/s",
            notes=[
                f"first {one['rows']:,} rows of the file, one autocommit save()"
                " each, into an empty catalog (small indexes: its fastest"
                " case); rate extrapolated"
            ],
        )
    )
    return rate


def _save_full(h: Harness, csv_path: Path, base: Baselines) -> tuple[int, float]:
    """Time save() per row into the loaded catalog; return its rows and rate.

    save() slows down as the indexes grow: timed again at the end of the
    load, the whole load is extrapolated from the mean of the per-row times
    at its start and its end (base.save_whole).
    """
    full = data.django_side(
        h.stack,
        "row-by-row",
        str(csv_path),
        str(h.options.row_sample),
        "--tail",
    )
    full_rate = full["rows"] / full["seconds"]
    base.save_whole = 2 / (1 / base.save_empty + 1 / full_rate)
    return full["rows"], full_rate


def _import(h: Harness, csv_path: Path, phase: str, base: Baselines) -> None:
    """Time import_products once (*phase* "create" or "update"); add its rows."""
    rows = h.size.products
    seconds, peak_mb, summary = _timed_import(h.stack, csv_path)
    rate = rows / seconds
    tail = _save_full(h, csv_path, base) if phase == "create" else None
    save_rate = base.save_whole or base.save_empty
    notes = [
        f"{seconds:.1f} s wall",
        f"peak RSS {peak_mb:,.0f} MB",
        target(peak_mb, 300, below=True, label="memory MB"),
        f"{rate / base.gin:.2f}x COPY into the fully indexed twin",
        f"{rate / base.btree:.2f}x B-tree-indexed COPY",
        f"{rate / base.same:.2f}x same-shape COPY",
        f"{rate / base.plain:.2f}x plain COPY",
        f"{rate / save_rate:.0f}x save() per row over the load"
        f" ({rate / base.save_empty:.0f}x its empty-catalog rate)",
    ]
    if phase == "create":
        notes += [
            target(rate / base.gin, 0.4, below=False, label="x COPY"),
            target(rate / save_rate, 20, below=False, label="x save()"),
        ]
    if summary:
        notes.append(summary)
    label = {"create": "create, empty catalog", "update": "update, same file"}[phase]
    h.add(
        Row(
            f"import_products {rows:,} rows ({label})",
            rate=rate,
            unit="rows/s",
            notes=notes,
        )
    )
    if tail is not None:
        _add_save_rows(h, *tail, base.save_whole)


def _add_save_rows(h: Harness, tail_rows: int, full_rate: float, whole: float) -> None:
    h.add(
        Row(
            "Product.save() one row at a time, full catalog",
            rate=full_rate,
            unit="rows/s",
            notes=[
                f"last {tail_rows:,} rows of the file deleted, then"
                " saved one by one into the loaded catalog; rate"
                " extrapolated"
            ],
        )
    )
    h.add(
        Row(
            "Product.save() one row at a time, whole load (estimate)",
            rate=whole,
            unit="rows/s",
            notes=[
                "from the mean per-row time of the empty-catalog and"
                " full-catalog samples: the x save() target uses it"
            ],
        )
    )


def _restore(h: Harness) -> None:
    """Put the seeded catalog back after the imports (new ids, today's dates)."""
    h.log("restoring the seeded catalog for the next run (seed_demo)")
    _truncate_products(h.stack)
    data.seed(h.stack, h.size)
    h.stack.flush_cache()


def _copy_plain(stack: Stack, csv_path: Path, header: list[str]) -> float:
    """Return COPY's rows/s for *csv_path* into a typed table without indexes."""
    columns = ", ".join(f'"{n}" {PLAIN_TYPES.get(n, "text")}' for n in header)
    with stack.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_plain")
        conn.execute(f"CREATE TABLE bench_copy_plain ({columns})")
        try:
            return _copy_file(conn, "bench_copy_plain", header, csv_path)
        finally:
            conn.execute("DROP TABLE bench_copy_plain")


def _copy_indexed(
    stack: Stack, csv_path: Path, header: list[str], *, gin: bool = True
) -> float:
    """Return COPY's rows/s for *csv_path* into a twin of catalog_product.

    The twin has every index of catalog_product, or without *gin* only its
    B-tree ones (primary key, unique SKU, filters and orderings).
    """
    with stack.connect() as conn:
        _create_twin(conn, header, gin=gin)
        try:
            return _copy_file(conn, "bench_copy_indexed", header, csv_path)
        finally:
            conn.execute("DROP TABLE bench_copy_indexed")
            conn.execute("DROP SEQUENCE bench_copy_indexed_seq")


SAME_SHAPE_NOTE = (
    "a table LIKE catalog_product with its generated full-text column, its"
    " checks, the indexes import_products keeps during a load, and the ones"
    " it defers built after the COPY as it builds them (included)"
)


def _copy_same_shape(stack: Stack, csv_path: Path, header: list[str]) -> float:
    """Return rows/s of COPY plus index builds into a twin shaped like the import's.

    The twin has catalog_product's columns with the generated full-text
    search_document (computed per row, as for the import), its CHECK
    constraints, and during the COPY the indexes import_products keeps into
    an empty catalog; the ones it defers are built after, with its settings
    (several at a time, GIN first). Only the category and owner, given by
    slug and email in the file, stay text (no foreign keys).
    """
    deferred = data.django_side(stack, "deferred-indexes")
    with stack.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_same")
        conn.execute(
            "CREATE TABLE bench_copy_same"
            " (LIKE catalog_product INCLUDING ALL EXCLUDING INDEXES)"
        )
        alters = _file_columns(conn, "bench_copy_same", header)
        conn.execute(f"ALTER TABLE bench_copy_same {', '.join(alters)}")
        kept, later = [], []
        for at, (name, definition) in enumerate(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema()"
                " AND tablename = 'catalog_product'"
            ).fetchall()
        ):
            twin = re.sub(
                r"^(CREATE (?:UNIQUE )?INDEX) \S+ ON \S+",
                rf"\1 bench_copy_same_{at} ON bench_copy_same",
                definition,
            )
            (later if name in deferred["names"] else kept).append(twin)
        for statement in kept:
            conn.execute(statement)
        try:
            started = time.perf_counter()
            _copy_file(conn, "bench_copy_same", header, csv_path, rate=False)
            later.sort(key=lambda statement: " USING gin " not in statement)
            with ThreadPoolExecutor(max_workers=deferred["workers"]) as pool:
                for future in [
                    pool.submit(_build_index, stack, statement, deferred["memory"])
                    for statement in later
                ]:
                    future.result()
            seconds = time.perf_counter() - started
            row = conn.execute("SELECT count(*) FROM bench_copy_same").fetchone()
            return (row[0] if row else 0) / seconds
        finally:
            conn.execute("DROP TABLE bench_copy_same")


def _build_index(stack: Stack, statement: str, memory: str) -> None:
    with stack.connect() as conn:
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", [memory])
        conn.execute(statement)


def _file_columns(conn: psycopg.Connection, table: str, header: list[str]) -> list[str]:
    """Return the ALTERs that fit a twin of catalog_product to the file's columns.

    The file names category and owner by slug and email: they are added as
    text; the columns it lacks lose NOT NULL and stay NULL (or default).
    """
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT column_name, is_generated FROM information_schema.columns"
            " WHERE table_name = %s",
            [table],
        )
        if row[1] != "ALWAYS"
    }
    alters = [f'ADD COLUMN "{c}" text' for c in header if c not in existing]
    alters += [
        f'ALTER COLUMN "{c}" DROP NOT NULL'
        for c in sorted(existing - set(header) - {"id"})
    ]
    return alters


def _create_twin(conn: psycopg.Connection, header: list[str], *, gin: bool) -> None:
    conn.execute("DROP TABLE IF EXISTS bench_copy_indexed")
    conn.execute("DROP SEQUENCE IF EXISTS bench_copy_indexed_seq")
    conn.execute("CREATE SEQUENCE bench_copy_indexed_seq")
    conn.execute(
        "CREATE TABLE bench_copy_indexed (LIKE catalog_product INCLUDING INDEXES)"
    )
    alters = _file_columns(conn, "bench_copy_indexed", header)
    alters.append("ALTER COLUMN id SET DEFAULT nextval('bench_copy_indexed_seq')")
    conn.execute(f"ALTER TABLE bench_copy_indexed {', '.join(alters)}")
    if not gin:
        for (name,) in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename ="
            " 'bench_copy_indexed' AND indexdef LIKE '%% USING gin %%'"
        ).fetchall():
            conn.execute(f'DROP INDEX "{name}"')


def _copy_file(
    conn: psycopg.Connection,
    table: str,
    header: list[str],
    csv_path: Path,
    *,
    rate: bool = True,
) -> float:
    """COPY *csv_path* into *table*; return rows per second (or 0 without *rate*)."""
    columns = ", ".join(f'"{name}"' for name in header)
    started = time.perf_counter()
    with (
        conn.cursor() as cursor,
        cursor.copy(
            f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)"
        ) as copy,
        csv_path.open("rb") as handle,
    ):
        while block := handle.read(1 << 20):
            copy.write(block)
    if not rate:
        return 0.0
    seconds = time.perf_counter() - started
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    count = row[0] if row else 0
    return count / seconds


def _truncate_products(stack: Stack) -> None:
    with stack.connect() as conn:
        conn.execute("TRUNCATE catalog_product")
    stack.flush_cache()


def _timed_import(stack: Stack, csv_path: Path) -> tuple[float, float, str]:
    """Run import_products; return seconds, peak RSS in MB and its last line."""
    log_path = RESULTS_DIR / "import.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "manage.py", "import_products", str(csv_path)],
            cwd=ROOT,
            env=stack.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    output = log_path.read_text(errors="replace").strip().splitlines()
    if process.returncode != 0:
        raise RuntimeError(f"import_products failed: {' | '.join(output[-5:])}")
    # ru_maxrss is in kilobytes on Linux.
    return seconds, usage.ru_maxrss / 1024, (output[-1] if output else "")
