import csv
import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.models import Product
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db


def export(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("export_products", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def import_(path: Path) -> str:
    out = StringIO()
    call_command("import_products", str(path), stdout=out, stderr=StringIO())
    return out.getvalue()


def snapshot() -> list[tuple]:
    return list(
        Product.objects.order_by("sku").values_list(
            "sku",
            "name",
            "slug",
            "description",
            "price",
            "stock",
            "is_active",
            "category_id",
            "owner_id",
            "updated_at",
        )
    )


@pytest.fixture
def catalog() -> list[Product]:
    owner = UserFactory(email="Mixed.Case@Example.com")
    tricky = ProductFactory(
        sku="T-1",
        name='Quote "and", comma',
        description="Line one\nline two, with ☕ and \\ backslash",
        owner=owner,
        is_active=False,
        stock=0,
    )
    return [tricky, *ProductFactory.create_batch(4, owner=owner)]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_exported_file_imports_back_unchanged(tmp_path, catalog, suffix):
    path = tmp_path / f"products.{suffix}"
    export("--output", str(path))
    before = snapshot()

    output = import_(path)

    assert "read=5 created=0 updated=0 unchanged=5" in output
    assert snapshot() == before


def test_export_into_an_empty_catalog_recreates_every_product(tmp_path, catalog):
    path = tmp_path / "products.csv"
    export("--output", str(path))
    before = [row[:7] for row in snapshot()]
    Product.objects.all().delete()

    import_(path)

    assert [row[:7] for row in snapshot()] == before


def test_csv_to_standard_output_with_summary_on_stderr(catalog):
    out, err = export()

    rows = list(csv.DictReader(StringIO(out)))
    assert [r["sku"] for r in rows] == [p.sku for p in catalog]
    tricky = rows[0]
    assert tricky["description"] == "Line one\nline two, with ☕ and \\ backslash"
    assert tricky["is_active"] == "false"
    assert tricky["owner"] == "Mixed.Case@Example.com"
    assert err.startswith("export_products: rows=5 ")


def test_jsonl_keeps_types_readable(catalog):
    out, _ = export("--format", "jsonl")

    first = json.loads(out.splitlines()[0])
    assert first["sku"] == "T-1"
    assert first["stock"] == 0 and first["is_active"] is False
    assert first["price"] == str(catalog[0].price)
    assert first["category"] == catalog[0].category.slug


def test_filters_by_category_and_active(catalog):
    other = CategoryFactory(slug="other")
    ProductFactory(sku="Z-1", category=other, is_active=True)
    ProductFactory(sku="Z-2", category=other, is_active=False)

    out, _ = export("--format", "jsonl", "--category", "other", "--active")
    inactive, _ = export("--format", "jsonl", "--inactive")

    assert [json.loads(line)["sku"] for line in out.splitlines()] == ["Z-1"]
    assert [json.loads(line)["sku"] for line in inactive.splitlines()] == [
        "T-1",
        "Z-2",
    ]


def test_unknown_category_is_a_command_error(catalog):
    with pytest.raises(CommandError, match="Unknown category: nope"):
        export("--category", "nope")


def test_export_query_count_does_not_grow_with_rows(tmp_path):
    owner = UserFactory()
    ProductFactory.create_batch(2, owner=owner)
    with CaptureQueriesContext(connection) as few:
        export("--output", str(tmp_path / "a.csv"))
    ProductFactory.create_batch(60, owner=owner)

    with CaptureQueriesContext(connection) as many:
        export("--output", str(tmp_path / "b.csv"))

    assert len(many.captured_queries) == len(few.captured_queries)


def test_behind_a_transaction_pooler_the_export_reads_keyset_batches(
    catalog, monkeypatch
):
    """PgBouncer in transaction mode: no server-side cursor, same file."""
    from catalog.management.commands import export_products

    expected, _ = export()
    monkeypatch.setattr(export_products, "CHUNK_SIZE", 2)
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    with CaptureQueriesContext(connection) as queries:
        got, _ = export()
    assert got == expected
    reads = [q["sql"] for q in queries if 'FROM "catalog_product"' in q["sql"]]
    assert len(reads) == 3  # 5 products in batches of 2, each after the last pk
    assert all("LIMIT 2" in sql for sql in reads)
