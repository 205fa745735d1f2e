import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from catalog.management.commands import import_products as import_products_command
from catalog.management.commands.import_products import Command as ImportProducts
from catalog.models import Category, Product
from catalog.services import products_upsert
from config.indexes import index_lock_key
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
HEADER = "sku,name,price,category,owner,stock,description,is_active\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_products", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(*args: str) -> tuple[str, str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("import_products", *args, stdout=out, stderr=err)
    return str(caught.value), out.getvalue(), err.getvalue()


def rows_csv(owner_email: str, count: int, *, start: int = 0, price: str = "9.99"):
    return HEADER + "".join(
        f"IMP-{i:05d},Item {i},{price},gadgets,{owner_email},{i % 7},About {i},true\n"
        for i in range(start, start + count)
    )


MODEL_INDEXES = [index.name for index in Product._meta.indexes]
# What migrations give the owner foreign key and the unique SKU's LIKE lookups
# (Django's names): an import into an empty catalog defers them too.
FIELD_INDEXES = [
    "catalog_product_sku_5c54c070_like",
    "catalog_product_owner_id_3142d196",
]
DEFERRED_INDEXES = [*MODEL_INDEXES, *FIELD_INDEXES]
# The categories the test files name, unless a test is about creating them.
KNOWN_CATEGORIES = ("c", "gadgets", "kitchen", "drinks")


@pytest.fixture(autouse=True)
def known_categories():
    for slug in KNOWN_CATEGORIES:
        CategoryFactory(slug=slug, name=slug.title())


def product_indexes() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
            [Product._meta.db_table],
        )
        return dict(cursor.fetchall())


def index_statements(queries: CaptureQueriesContext, verb: str) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].startswith(verb)]


def summary(output: str) -> dict[str, str]:
    line = output.strip().splitlines()[-1]
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def test_csv_creates_products_categories_and_maps_owner_email_in_any_case(
    tmp_path,
):
    Category.objects.all().delete()
    owner = UserFactory(email="Owner@Example.com")
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + "A-1,Lamp,19.90,lighting,owner@example.com,4,Warm light,true\n"
        + "A-2,Desk,120,furniture,OWNER@EXAMPLE.COM,0,,false\n",
    )

    out, err = run(str(path), "--create-categories")

    assert summary(out) | {"seconds": "", "rows_per_s": ""} == {
        "read": "2",
        "created": "2",
        "updated": "0",
        "unchanged": "0",
        "superseded": "0",
        "rejected": "0",
        "seconds": "",
        "rows_per_s": "",
    }
    assert err == ""
    lamp = Product.objects.get(sku="A-1")
    assert (lamp.name, lamp.price, lamp.stock, lamp.slug) == (
        "Lamp",
        Decimal("19.90"),
        4,
        "lamp",
    )
    assert lamp.owner == owner and lamp.category.slug == "lighting"
    desk = Product.objects.get(sku="A-2")
    assert desk.is_active is False and desk.description == ""
    assert sorted(Category.objects.values_list("slug", "name")) == [
        ("furniture", "Furniture"),
        ("lighting", "Lighting"),
    ]


def test_rerun_of_the_same_file_changes_nothing(tmp_path):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 30))
    run(str(path))
    before = list(Product.objects.order_by("sku").values_list("sku", "updated_at"))

    out, _ = run(str(path))

    assert summary(out)["unchanged"] == "30"
    assert summary(out)["created"] == summary(out)["updated"] == "0"
    assert Product.objects.count() == 30
    assert list(Product.objects.order_by("sku").values_list("sku", "updated_at")) == (
        before
    )


def test_changed_rows_are_updated_and_absent_columns_keep_stored_values(tmp_path):
    owner = UserFactory()
    product = ProductFactory(
        sku="KEEP-1", description="Stored text", stock=42, owner=owner
    )
    path = write(
        tmp_path,
        "p.csv",
        "sku,name,price,category,owner\n"
        f"KEEP-1,New name,5.00,{product.category.slug},{owner.email}\n",
    )

    out, _ = run(str(path))

    assert summary(out)["updated"] == "1"
    product.refresh_from_db()
    assert (product.name, product.price) == ("New name", Decimal("5.00"))
    assert (product.description, product.stock) == ("Stored text", 42)


def test_sku_repeated_in_the_file_last_occurrence_wins(tmp_path):
    owner = UserFactory()
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"D-1,First,1.00,c,{owner.email},1,,true\n"
        + f"D-2,Other,2.00,c,{owner.email},1,,true\n"
        + f"D-1,Last,3.00,c,{owner.email},1,,true\n",
    )

    out, _ = run(str(path), "--batch-size", "2")
    run(str(path))

    assert Product.objects.get(sku="D-1").name == "Last"
    assert Product.objects.count() == 2
    assert summary(out)["read"] == "3"


def test_owner_option_names_the_owner_of_every_row(tmp_path):
    owner = UserFactory(email="boss@example.com")
    path = write(tmp_path, "p.csv", "sku,name,price,category\nO-1,Cup,2.50,kitchen\n")

    run(str(path), "--owner", "BOSS@example.com")

    assert Product.objects.get(sku="O-1").owner == owner


def test_without_owner_column_or_option_the_file_is_refused(tmp_path):
    path = write(tmp_path, "p.csv", "sku,name,price,category\nO-1,Cup,2.50,kitchen\n")

    message, _, _ = run_failing(str(path))

    assert "line 1: missing column(s) owner" in message
    assert not Product.objects.exists()


def test_unknown_owner_option_is_refused_before_reading(tmp_path):
    path = write(tmp_path, "p.csv", "sku,name,price,category\nO-1,Cup,2.50,kitchen\n")

    message, _, _ = run_failing(str(path), "--owner", "ghost@example.com")

    assert message.startswith("--owner: No user with this email address.")


def test_every_rejected_row_is_reported_with_line_field_and_reason(tmp_path):
    owner = UserFactory()
    e = owner.email
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"OK-1,Good,1.00,c,{e},1,,true\n"  # line 2
        + f"OK-2,Bad price,-1,c,{e},1,,true\n"  # line 3
        + f"OK-3,Bad stock,1.00,c,{e},-5,,true\n"  # line 4
        + f"bad sku!,Bad sku,1.00,c,{e},1,,true\n"  # line 5
        + f"OK-5,,1.00,c,{e},1,,true\n"  # line 6
        + "OK-6,No owner,1.00,c,ghost@example.com,1,,true\n"  # line 7
        + f"OK-7,Bad category,1.00,Not A Slug,{e},1,,true\n"  # line 8
        + f"OK-8,Short row,1.00,c,{e}\n"  # line 9
        + f"OK-9,Bad flag,1.00,c,{e},1,,maybe\n"  # line 10
        + f'OK-10,"Multi\nline",1.999,c,{e},1,,true\n',  # line 11
    )

    message, out, err = run_failing(str(path))

    assert message == "9 row(s) rejected"
    assert summary(out)["created"] == "1" and summary(out)["rejected"] == "9"
    assert err.splitlines() == [
        "line 3: price: Price must be greater than or equal to 0.",
        "line 4: stock: Stock must be greater than or equal to 0.",
        "line 5: sku: SKU must be 1-64 characters of letters, digits, '.', '_' or '-'.",
        "line 6: name: This field may not be blank.",
        "line 7: owner: No user with this email address.",
        "line 8: category: Enter a valid “slug” consisting of letters, numbers,"
        " underscores or hyphens.",
        "line 9: expected 8 fields, found 5",
        "line 10: is_active: Must be a valid boolean.",
        "line 11: price: Ensure that there are no more than 2 decimal places.",
    ]
    assert list(Product.objects.values_list("sku", flat=True)) == ["OK-1"]
    assert sorted(Category.objects.values_list("slug", flat=True)) == sorted(
        KNOWN_CATEGORIES
    )


def test_errors_file_can_be_fixed_and_fed_back(tmp_path):
    owner = UserFactory()
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"E-1,Good,1.00,c,{owner.email},1,,true\n"
        + f"E-2,Bad,-3,c,{owner.email},1,Keep me,true\n"
        + "E-3,Short,2.00\n",
    )
    errors = tmp_path / "errors.csv"

    message, _, _ = run_failing(str(path), "--errors", str(errors))

    assert message == f"2 row(s) rejected; see {errors}"
    content = errors.read_text(encoding="utf-8")
    assert 'E-3,Short,,,2.00,,,,,4,"expected 8 fields, found 3"' in content
    assert content.splitlines()[0] == (
        "sku,name,slug,description,price,stock,is_active,category,owner,_line,_errors"
    )
    assert "E-2,Bad,,Keep me,-3,1,true,c," in content
    assert ",3,price: Price must be greater than or equal to 0." in content
    fixed = content.replace(",-3,", ",3.00,").splitlines()[:2]
    errors.write_text("\n".join(fixed) + "\n", encoding="utf-8")

    out, _ = run(str(errors))

    assert summary(out)["created"] == "1"
    assert Product.objects.get(sku="E-2").description == "Keep me"


def test_strict_stops_at_the_first_bad_row_with_nothing_of_its_batch(tmp_path):
    owner = UserFactory()
    text = rows_csv(owner.email, 4)
    text += f"S-BAD,Bad,-1,gadgets,{owner.email},1,,true\n"  # line 6
    text += rows_csv(owner.email, 2, start=10).split("\n", 1)[1]
    path = write(tmp_path, "p.csv", text)

    message, out, _ = run_failing(str(path), "--strict", "--batch-size", "3")

    assert message == (
        "--strict: stopped at line 6: price: Price must be greater than or equal to 0."
    )
    # The first batch (lines 2-4) is committed; the batch with line 6 is not.
    assert sorted(Product.objects.values_list("sku", flat=True)) == [
        "IMP-00000",
        "IMP-00001",
        "IMP-00002",
    ]
    assert summary(out)["created"] == "3"


def test_dry_run_validates_and_counts_but_writes_nothing(tmp_path):
    owner = UserFactory()
    ProductFactory(sku="IMP-00000", owner=owner, name="Old")
    Category.objects.filter(slug="gadgets").delete()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 5))

    out, _ = run(str(path), "--dry-run", "--create-categories")

    assert out.startswith("import_products: dry-run read=5 created=4 updated=1")
    assert Product.objects.count() == 1
    assert Product.objects.get().name == "Old"
    assert not Category.objects.filter(slug="gadgets").exists()


def test_jsonl_from_standard_input_with_bom(tmp_path, monkeypatch):
    owner = UserFactory()
    lines = [
        {"sku": "J-1", "name": "Tea", "price": 4.5, "category": "drinks",
         "owner": owner.email, "stock": 3, "is_active": True},
        {"sku": "J-2", "name": "Café", "price": "2.00", "category": "drinks",
         "owner": owner.email, "description": "Strong ☕"},
    ]  # fmt: skip
    data = b"\xef\xbb\xbf" + "\n".join(json.dumps(x) for x in lines).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))

    out, _ = run("-", "--format", "jsonl")

    assert summary(out)["created"] == "2"
    assert Product.objects.get(sku="J-2").description == "Strong ☕"
    assert Product.objects.get(sku="J-1").price == Decimal("4.50")


def test_utf8_bom_csv_header_is_read(tmp_path):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", b"\xef\xbb\xbf" + rows_csv(owner.email, 2).encode())

    run(str(path))

    assert Product.objects.count() == 2


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("miss.csv", "sku,name\n", "line 1: missing column(s) price, category"),
        ("empty.csv", "", "line 1: empty file"),
        (
            "latin1.csv",
            "sku,name,price,catégorie\n".encode("latin-1"),
            "line 1: not valid UTF-8 text (byte 0xe9 at column 19)",
        ),
        (
            "header.csv",
            'sku,"name,price,category\n',
            "line 1: bad CSV: unexpected end of data",
        ),
        (
            "nul.csv",
            HEADER.encode() + b"X-1,A\x00B,1,c,ops@example.com,1,,true\n",
            "line 2: contains a NUL byte; is this a binary file?",
        ),
        (
            "binary.csv",
            bytes(range(256)) * 4,
            "line 1: contains a NUL byte; is this a binary file?",
        ),
    ],
)
def test_malformed_file_is_a_one_line_error_naming_the_line(
    tmp_path, name, content, expected
):
    UserFactory(email="ops@example.com")
    path = write(tmp_path, name, content)

    message, _, _ = run_failing(str(path), "--owner", "ops@example.com")

    assert message.startswith(f"{path}: {expected}"), message
    assert "\n" not in message
    assert not Product.objects.exists()


def test_unknown_extension_asks_for_format(tmp_path):
    path = write(tmp_path, "p.txt", HEADER)

    message, _, _ = run_failing(str(path))

    assert "pass --format" in message


def test_batch_queries_do_not_grow_with_the_batch(tmp_path):
    owner = UserFactory()
    small = write(tmp_path, "small.csv", rows_csv(owner.email, 2))
    big = write(tmp_path, "big.csv", rows_csv(owner.email, 200, start=100))

    # Only the batches count here: the first run would otherwise defer the
    # indexes (empty catalog) and the second not.
    with CaptureQueriesContext(connection) as few:
        run(str(small), "--no-defer-indexes")
    with CaptureQueriesContext(connection) as many:
        run(str(big), "--no-defer-indexes")

    assert len(many.captured_queries) == len(few.captured_queries)


def test_api_shows_imported_changes_at_once(
    tmp_path, api_client, django_capture_on_commit_callbacks
):
    owner = UserFactory()
    category = Category.objects.get(slug="gadgets")
    product = ProductFactory(sku="IMP-00000", owner=owner, category=category)
    url = reverse("api:product-detail", args=[product.pk])
    # Twice: the second answer may come from the response cache.
    assert api_client.get(url).json()["name"] == product.name
    assert api_client.get(url).json()["name"] == product.name
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 1))

    with django_capture_on_commit_callbacks(execute=True):
        run(str(path))

    assert api_client.get(url).json()["name"] == "Item 0"


@pytest.mark.django_db(transaction=True)
def test_killed_import_then_rerun_gives_exact_rows(tmp_path):
    owner = UserFactory()
    before = product_indexes()
    text = rows_csv(owner.email, 1000)
    lines = text.splitlines(keepends=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": (
            "postgres://postgres@127.0.0.1:5432/" + connection.settings_dict["NAME"]
        ),
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "import_products", "-", "--format", "csv",
         "--batch-size", "100"],
        cwd=ROOT, env=env, stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Feed 650 rows, wait for six batches to commit, then kill it mid-batch.
    process.stdin.write("".join(lines[:651]).encode())
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while Product.objects.count() < 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert Product.objects.count() == 600
    # It started on an empty catalog, so it died with the indexes dropped.
    assert not set(product_indexes()) & set(DEFERRED_INDEXES)

    path = write(tmp_path, "p.csv", text)
    out, _ = run(str(path))

    assert summary(out)["created"] == "400"
    assert summary(out)["unchanged"] == "600"
    assert Product.objects.count() == 1000
    assert Product.objects.filter(sku="IMP-00999", name="Item 999").exists()
    # Built back as the migrations made them: same names, same definitions.
    assert product_indexes() == before


class TerminalIO(StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_on_a_terminal_only(tmp_path):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 5))
    terminal = TerminalIO()

    call_command("import_products", str(path), stdout=StringIO(), stderr=terminal)
    _, piped = run(str(path))

    assert "rows/s" in terminal.getvalue() and "ETA" in terminal.getvalue()
    assert "100%" in terminal.getvalue()
    assert piped == ""


def test_index_build_line_is_plain_text_not_an_error(tmp_path):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 5))
    terminal = TerminalIO()

    # Built as manage.py builds it, so standard error has its error style.
    command = ImportProducts(stderr=terminal, force_color=True)
    call_command(command, str(path), "--defer-indexes", stdout=StringIO())

    drawn = terminal.getvalue()
    assert f"\rbuilding {len(DEFERRED_INDEXES)} indexes..." in drawn
    assert "\x1b[31" not in drawn  # standard error's bold red


def test_verbosity_zero_is_silent_and_two_reports_each_batch(tmp_path):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 5))
    terminal = TerminalIO()

    out = StringIO()
    call_command("import_products", str(path), verbosity=0, stdout=out, stderr=terminal)
    loud, _ = run(str(path), "--batch-size", "2", "--verbosity", "2")

    assert out.getvalue() == "" and terminal.getvalue() == ""
    assert loud.splitlines()[:3] == [
        "batch lines 2-3: created=0 updated=0 unchanged=2 rejected=0",
        "batch lines 4-5: created=0 updated=0 unchanged=2 rejected=0",
        "batch lines 6-6: created=0 updated=0 unchanged=1 rejected=0",
    ]


def test_jsonl_rows_of_the_wrong_shape_are_rejected_not_crashed(tmp_path):
    owner = UserFactory()
    good = {"sku": "W-1", "name": "Ok", "price": "1.00", "category": "c",
            "owner": owner.email}  # fmt: skip
    path = write(
        tmp_path,
        "p.jsonl",
        "\n".join(
            json.dumps(x)
            for x in [
                good,
                [1, 2],
                {**good, "sku": "W-2", "owner": ["x"], "category": {"a": 1}},
                {**good, "sku": "W-3"},
                {**good, "sku": "W-4", "price": None, "stock": 1.5},
            ]
        ),
    )

    _, _, err = run_failing(str(path))

    assert err.splitlines() == [
        "line 2: expected a JSON object",
        "line 3: category: Must be a category slug.; owner: Enter a valid email"
        " address.",
        "line 5: price: This field may not be null.; stock: A valid integer is"
        " required.",
    ]
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["W-1", "W-3"]


def test_malformed_line_mid_file_keeps_the_batches_before_it(tmp_path):
    owner = UserFactory()
    text = rows_csv(owner.email, 4).encode() + b"X-1,A\x00B,1,c,x,1,,true\n"
    path = write(tmp_path, "p.csv", text + rows_csv(owner.email, 3).encode())

    message, out, _ = run_failing(str(path), "--batch-size", "2")

    assert message == f"{path}: line 6: contains a NUL byte; is this a binary file?"
    assert summary(out)["created"] == "4"
    assert Product.objects.count() == 4


def test_load_into_empty_catalog_defers_indexes_and_builds_them_after(
    tmp_path,
):
    owner = UserFactory()
    before = product_indexes()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 5))

    with CaptureQueriesContext(connection) as queries:
        out, _ = run(str(path), "--batch-size", "2", "--verbosity", "2")

    dropped = index_statements(queries, "DROP INDEX")
    built = index_statements(queries, "CREATE INDEX")
    assert len(dropped) == len(built) == len(DEFERRED_INDEXES)
    assert all(any(f'"{name}"' in sql for sql in built) for name in DEFERRED_INDEXES)
    assert not any("catalog_product_sku" in sql for sql in dropped if "key" in sql)
    # Dropped before the first batch, built after the last one.
    # Each batch write starts by looking up its SKUs (then copies or merges).
    statements = [q["sql"] for q in queries.captured_queries]
    writes = [
        i
        for i, sql in enumerate(statements)
        if sql.startswith("SELECT EXISTS (SELECT FROM catalog_product")
    ]
    assert len(writes) == 3
    assert max(statements.index(sql) for sql in dropped) < writes[0]
    assert min(statements.index(sql) for sql in built) > writes[-1]
    assert out.splitlines()[-3].startswith("indexes built in")
    # In a transaction (this test's) VACUUM cannot run: statistics only.
    assert out.splitlines()[-2].startswith("catalog_product analyzed in")
    assert summary(out)["created"] == "5"
    assert product_indexes() == before


@pytest.mark.django_db(transaction=True)
def test_committed_load_builds_the_indexes_on_other_connections(tmp_path):
    owner = UserFactory()
    before = product_indexes()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 50))

    with CaptureQueriesContext(connection) as queries:
        out, _ = run(str(path), "--batch-size", "20", "--verbosity", "2")

    assert out.splitlines()[-3].startswith("indexes built in")
    # Vacuumed after the load: index-only scans need not visit the heap.
    assert out.splitlines()[-2].startswith("catalog_product vacuumed and analyzed in")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relallvisible, relpages FROM pg_class"
            " WHERE oid = 'catalog_product'::regclass"
        )
        visible, pages = cursor.fetchone()
    assert 0 < visible == pages
    with connection.cursor() as cursor:  # lifted for the VACUUM only
        cursor.execute(
            "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"
        )
        assert cursor.fetchone()[0] == str(settings.DB_STATEMENT_TIMEOUT_MS)
    assert len(index_statements(queries, "DROP INDEX")) == len(DEFERRED_INDEXES)
    assert index_statements(queries, "CREATE INDEX") == []
    assert product_indexes() == before
    assert Product.objects.count() == 50
    assert Product.objects.filter(sku="IMP-00049", name="Item 49").exists()


@pytest.mark.django_db(transaction=True)
def test_a_vacuum_that_fails_leaves_the_import_a_success(tmp_path, monkeypatch, dsn):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 50))
    vacuum = import_products_command.analyze
    monkeypatch.setattr("config.upsert.VACUUM_LOCK_WAIT", "100ms")

    def locked_out(*models, **kwargs):
        # Another session holds the lock VACUUM needs (an operator's ANALYZE,
        # a CREATE INDEX CONCURRENTLY) for longer than VACUUM_LOCK_WAIT.
        with psycopg.connect(dsn) as other:
            other.execute("LOCK TABLE catalog_product IN SHARE UPDATE EXCLUSIVE MODE")
            return vacuum(*models, **kwargs)

    monkeypatch.setattr(import_products_command, "analyze", locked_out)
    out, _ = run(str(path), "--batch-size", "20", "--verbosity", "2")

    assert out.splitlines()[-3].startswith("indexes built in")
    assert out.splitlines()[-2] == (
        "catalog_product not vacuumed (canceling statement due to lock timeout);"
        " autovacuum will, and lists may read the table's rows until it has."
    )
    assert summary(out)["created"] == "50"
    assert Product.objects.count() == 50
    with connection.cursor() as cursor:  # both restored after the failed VACUUM
        cursor.execute(
            "SELECT name, setting FROM pg_settings"
            " WHERE name IN ('statement_timeout', 'lock_timeout')"
        )
        assert dict(cursor.fetchall()) == {
            "statement_timeout": str(settings.DB_STATEMENT_TIMEOUT_MS),
            "lock_timeout": "0",
        }


@pytest.mark.django_db(transaction=True)
def test_committed_load_resolves_owners_ahead_on_the_readers_connection(tmp_path):
    owners = UserFactory.create_batch(3)
    lines = [HEADER.rstrip("\n")]
    for i in range(40):
        owner = owners[i % 3].email.upper() if i != 17 else "nobody@example.com"
        category = "gadgets" if i != 31 else "no-such-category"
        lines.append(f"IMP-{i:05d},Item {i},1.50,{category},{owner},{i},About,true")
    path = write(tmp_path, "p.csv", "\n".join(lines) + "\n")

    def backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database()"
            )
            return cursor.fetchone()[0]

    before = backends()
    with CaptureQueriesContext(connection) as queries:
        message, out, err = run_failing(str(path), "--batch-size", "7")

    assert message == "2 row(s) rejected"
    # Resolved by the reader thread: none of it on this thread's connection.
    lookups = [q for q in queries if "lower(email)" in q["sql"]]
    assert lookups == []
    assert err.splitlines() == [
        "line 19: owner: No user with this email address.",
        "line 33: category: No category with this slug (--create-categories"
        " creates it).",
    ]
    assert summary(out)["created"] == "38"
    stored = dict(Product.objects.values_list("sku", "owner_id"))
    assert len(stored) == 38
    assert stored["IMP-00020"] == owners[20 % 3].pk
    # The reader thread closed the connection it opened.
    deadline = time.monotonic() + 5
    while backends() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends() == before


def test_load_into_a_stocked_catalog_keeps_the_indexes(tmp_path):
    owner = UserFactory()
    ProductFactory(owner=owner)
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 3))

    with CaptureQueriesContext(connection) as queries:
        run(str(path))

    assert index_statements(queries, "DROP INDEX") == []
    assert index_statements(queries, "CREATE INDEX") == []


def test_defer_flag_drops_the_indexes_of_a_stocked_catalog_too(tmp_path):
    owner = UserFactory()
    ProductFactory(owner=owner)
    before = product_indexes()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 3))

    with CaptureQueriesContext(connection) as queries:
        run(str(path), "--defer-indexes")

    assert len(index_statements(queries, "DROP INDEX")) == len(DEFERRED_INDEXES)
    assert product_indexes() == before
    assert Product.objects.count() == 4


def test_dry_run_never_drops_or_builds_indexes(tmp_path):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 3))
    with connection.schema_editor() as editor:
        editor.remove_index(Product, Product._meta.indexes[-1])

    with CaptureQueriesContext(connection) as queries:
        out, _ = run(str(path), "--dry-run", "--defer-indexes")

    assert index_statements(queries, "DROP INDEX") == []
    assert index_statements(queries, "CREATE INDEX") == []
    assert out.startswith(
        "catalog_product lacks index(es) catalog_product_sku_upper; the next import"
    )
    assert "catalog_product_sku_upper" not in product_indexes()


def test_run_that_rejects_rows_still_builds_the_indexes(tmp_path):
    owner = UserFactory()
    before = product_indexes()
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"R-1,Good,1.00,c,{owner.email},1,,true\n"
        + f"R-2,Bad,-1,c,{owner.email},1,,true\n",
    )

    with CaptureQueriesContext(connection) as queries:
        message, out, _ = run_failing(str(path))

    assert message == "1 row(s) rejected"
    assert len(index_statements(queries, "DROP INDEX")) == len(DEFERRED_INDEXES)
    assert product_indexes() == before
    assert summary(out)["created"] == "1"


def test_indexes_missing_after_a_crash_are_built_by_any_next_run(tmp_path):
    owner = UserFactory()
    ProductFactory(owner=owner, sku="IMP-00000")
    before = product_indexes()
    # What a run killed between dropping and building leaves behind.
    lost = ["catalog_product_price", "catalog_product_search"]
    with connection.schema_editor() as editor:
        for index in Product._meta.indexes:
            if index.name in lost:
                editor.remove_index(Product, index)
    assert not set(lost) & set(product_indexes())
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 2))

    out, _ = run(str(path))

    assert out.splitlines()[0] == (
        "Built missing index(es) catalog_product_search,"
        " catalog_product_price (left by an interrupted import?)."
    )
    assert product_indexes() == before
    assert summary(out)["created"] == "1" and summary(out)["updated"] == "1"


def test_field_indexes_a_crash_left_missing_are_built_as_migrations_made_them(
    tmp_path,
):
    owner = UserFactory()
    ProductFactory(owner=owner, sku="IMP-00000")
    before = product_indexes()
    with connection.cursor() as cursor:
        for name in FIELD_INDEXES:
            cursor.execute(f'DROP INDEX "{name}"')
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 2))

    out, _ = run(str(path))

    assert out.splitlines()[0] == (
        "Built missing index(es) catalog_product_sku_5c54c070_like,"
        " catalog_product_owner_id_3142d196 (left by an interrupted import?)."
    )
    assert product_indexes() == before
    assert summary(out)["created"] == "1" and summary(out)["updated"] == "1"


def test_import_leaves_indexes_alone_while_another_load_defers_them(
    tmp_path, monkeypatch, dsn
):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 2))
    with connection.schema_editor() as editor:
        editor.remove_index(Product, Product._meta.indexes[-1])
    monkeypatch.setattr("config.indexes.INDEX_LOCK_WAIT", "100ms")
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [index_lock_key(Product)])
        with CaptureQueriesContext(connection) as queries:
            out, _ = run(str(path))

    assert out.splitlines()[0] == (
        "Another import is loading products with the indexes dropped;"
        " it builds them when it ends."
    )
    assert index_statements(queries, "DROP INDEX") == []
    assert index_statements(queries, "CREATE INDEX") == []
    assert summary(out)["created"] == "2"


def test_busy_catalog_is_loaded_with_its_indexes_in_place(tmp_path, monkeypatch, dsn):
    owner = UserFactory()
    path = write(tmp_path, "p.csv", rows_csv(owner.email, 2))
    monkeypatch.setattr("config.indexes.DROP_LOCK_WAIT", "100ms")
    with psycopg.connect(dsn) as reader:
        # A long transaction that has read products holds a lock DROP INDEX
        # has to wait for.
        reader.execute("SELECT count(*) FROM catalog_product")
        with CaptureQueriesContext(connection) as queries:
            out, _ = run(str(path))

    assert out.splitlines()[0] == (
        "catalog_product is in use by another transaction; loading with its"
        " indexes in place."
    )
    assert index_statements(queries, "CREATE INDEX") == []
    assert set(product_indexes()) >= set(DEFERRED_INDEXES)
    assert summary(out)["created"] == "2"


def new_row(owner, category, sku: str = "IMP-00001", **fields) -> dict:
    return {
        "sku": sku,
        "name": "New lamp",
        "price": Decimal("10.00"),
        "category_id": category.pk,
        "owner_id": owner.pk,
        **fields,
    }


def test_sku_taken_after_the_lookup_is_merged_not_duplicated(monkeypatch):
    owner, category = UserFactory(), CategoryFactory()
    ProductFactory(sku="IMP-00001", owner=owner, category=category, name="Old")
    # As when another session inserts a SKU between the lookup and the COPY.
    monkeypatch.setattr(
        "catalog.services._NEW_SKUS_SQL", "SELECT %s IS NULL, now()::text, true"
    )

    result = products_upsert(
        rows=[new_row(owner, category), new_row(owner, category, sku="IMP-00002")]
    )

    assert (result.created, result.updated, result.unchanged) == (1, 1, 0)
    assert Product.objects.get(sku="IMP-00001").name == "New lamp"
    assert Product.objects.count() == 2


@pytest.mark.parametrize("reference", ["category_id", "owner_id"])
def test_new_rows_naming_a_vanished_category_or_owner_break_no_foreign_key(
    reference,
):
    owner, category = UserFactory(), CategoryFactory()
    # Deleted after the batch resolved it: no row has this id.
    row = new_row(owner, category, **{reference: 2**40})

    with pytest.raises(IntegrityError), transaction.atomic():
        products_upsert(rows=[row])
        connection.check_constraints()


@pytest.mark.django_db(transaction=True)
def test_categories_and_owners_of_new_rows_cannot_be_deleted_before_commit(dsn):
    owner, category = UserFactory(), CategoryFactory()

    with transaction.atomic():
        products_upsert(rows=[new_row(owner, category)])
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute("SET lock_timeout = '200ms'")
            for table, pk in (
                ("catalog_category", category.pk),
                ("accounts_user", owner.pk),
            ):
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    other.execute(f"DELETE FROM {table} WHERE id = %s", [pk])  # noqa: S608

    assert Product.objects.filter(sku="IMP-00001", owner=owner).exists()


def test_undecodable_line_is_rejected_with_its_bytes_and_the_others_load(tmp_path):
    owner = UserFactory()
    e = owner.email
    text = (
        HEADER.encode()
        + f"U-1,Tea,1.00,c,{e},1,,true\n".encode()
        + f"U-2,Caf\xe9,2.00,c,{e},1,,true\n".encode("latin-1")  # line 3
        + f'U-3,"Two\nlines \xff",3.00,c,{e},1,,true\n'.encode("latin-1")  # 4-5
        + f"U-4,Crème,4.00,c,{e},1,,true\n".encode()
    )
    path = write(tmp_path, "p.csv", text)
    errors = tmp_path / "errors.csv"

    message, out, err = run_failing(str(path), "--errors", str(errors))

    assert message == f"2 row(s) rejected; see {errors}"
    assert err.splitlines() == [
        "line 3: not valid UTF-8 text (byte 0xe9 at column 8)",
        "line 4: not valid UTF-8 text (byte 0xff at column 7) on line 5",
    ]
    assert sorted(Product.objects.values_list("name", flat=True)) == ["Crème", "Tea"]
    content = errors.read_bytes()
    # The bad bytes go back as they came, with the line number, to be fixed.
    assert b"U-2,Caf\xe9,,,2.00,1,true,c," in content
    assert b",3,not valid UTF-8 text (byte 0xe9 at column 8)\n" in content
    assert summary(out)["created"] == "2"


def test_undecodable_jsonl_line_is_rejected_and_the_others_load(tmp_path):
    owner = UserFactory()
    row = {"name": "A", "price": "1.00", "category": "c", "owner": owner.email}
    path = write(
        tmp_path,
        "p.jsonl",
        json.dumps({**row, "sku": "J-1"}).encode()
        + b"\n"
        + json.dumps(
            {**row, "sku": "J-2", "name": "Caf\xe9"}, ensure_ascii=False
        ).encode("latin-1")
        + b"\n"
        + json.dumps({**row, "sku": "J-3"}).encode(),
    )

    _, _, err = run_failing(str(path))

    assert err.splitlines() == ["line 2: not valid UTF-8 text (byte 0xe9 at column 14)"]
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["J-1", "J-3"]


def test_unterminated_quote_rejects_its_line_and_the_lines_after_it_load(tmp_path):
    owner = UserFactory()
    e = owner.email
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"Q-1,Good,1.00,c,{e},1,,true\n"  # line 2
        + f'Q-2,"unterminated,2.00,c,{e},1,,true\n'  # line 3
        + f"Q-3,Swallowed then read again,3.00,c,{e},1,,true\n"  # line 4
        + f'Q-4,"Quoted",4.00,c,{e},1,,true\n'  # line 5
        + f'Q-5,"bad"quote,5.00,c,{e},1,,true\n'  # line 6
        + f'Q-6,"Multi\nline",6.00,c,{e},1,,true\n'  # lines 7-8
        + f'Q-7,"no end,7.00,c,{e},1,,true\n'  # line 9
        + f"Q-8,Last,8.00,c,{e},1,,true\n",  # line 10
    )
    errors = tmp_path / "errors.csv"

    message, out, err = run_failing(
        str(path), "--errors", str(errors), "--batch-size", "2"
    )

    assert message == f"3 row(s) rejected; see {errors}"
    assert err.splitlines() == [
        "line 3: bad CSV: ',' expected after '\"' on line 5, in a quoted field that"
        " starts on this line",
        "line 6: bad CSV: ',' expected after '\"'",
        "line 9: bad CSV: unexpected end of data on line 10, in a quoted field that"
        " starts on this line",
    ]
    assert sorted(Product.objects.values_list("sku", flat=True)) == [
        "Q-1",
        "Q-3",
        "Q-4",
        "Q-6",
        "Q-8",
    ]
    assert Product.objects.get(sku="Q-6").name == "Multi\nline"
    assert summary(out) | {"seconds": "", "rows_per_s": ""} == {
        "read": "8",
        "created": "5",
        "updated": "0",
        "unchanged": "0",
        "superseded": "0",
        "rejected": "3",
        "seconds": "",
        "rows_per_s": "",
    }
    with errors.open(encoding="utf-8", newline="") as handle:
        rejected = list(csv.DictReader(handle))
    # What a lenient reading of the line gives, with its number.
    assert rejected[0]["sku"] == "Q-2"
    assert rejected[0]["name"] == f"unterminated,2.00,c,{e},1,,true"
    assert [(r["_line"], r["_errors"][:8]) for r in rejected] == [
        ("3", "bad CSV:"),
        ("6", "bad CSV:"),
        ("9", "bad CSV:"),
    ]


def test_invalid_jsonl_line_is_rejected_and_the_others_load(tmp_path):
    owner = UserFactory()
    row = {"name": "A", "price": "1.00", "category": "c", "owner": owner.email}
    path = write(
        tmp_path,
        "p.jsonl",
        json.dumps({**row, "sku": "J-1"})
        + '\n{"sku": "J-2", "name": }\n'
        + json.dumps({**row, "sku": "J-3"})
        + '\n{"sku": "J-',
    )

    _, _, err = run_failing(str(path))

    assert err.splitlines() == [
        "line 2: invalid JSON at column 24: Expecting value",
        "line 4: invalid JSON at column 9: Unterminated string starting at",
    ]
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["J-1", "J-3"]


def test_unknown_category_is_rejected_unless_asked_to_create_it(tmp_path):
    owner = UserFactory()
    e = owner.email
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"K-1,Known,1.00,kitchen,{e},1,,true\n"
        + f"K-2,New,1.00,garden,{e},1,,true\n"
        + "K-3,New owner too,1.00,garden,nobody@example.com,1,,true\n",
    )

    message, _, err = run_failing(str(path))

    assert message == "2 row(s) rejected"
    assert err.splitlines() == [
        "line 3: category: No category with this slug (--create-categories"
        " creates it).",
        "line 4: category: No category with this slug (--create-categories"
        " creates it).; owner: No user with this email address.",
    ]
    assert list(Product.objects.values_list("sku", flat=True)) == ["K-1"]
    assert not Category.objects.filter(slug="garden").exists()

    run_failing(str(path), "--create-categories")

    assert Product.objects.get(sku="K-2").category.name == "Garden"


def test_repeated_sku_names_the_line_it_supersedes_in_and_across_batches(tmp_path):
    owner = UserFactory()
    e = owner.email
    path = write(
        tmp_path,
        "p.csv",
        HEADER
        + f"R-1,First,1.00,c,{e},1,,true\n"  # line 2
        + f"R-2,Other,1.00,c,{e},1,,true\n"  # line 3
        + f"R-1,Second,1.00,c,{e},1,,true\n"  # line 4, same batch as 2
        + f"R-2,Again,1.00,c,{e},1,,true\n",  # line 5, next batch
    )

    out, err = run(str(path), "--batch-size", "3")

    assert err.splitlines() == [
        "line 2: superseded by line 4 (same sku 'R-1')",
        "line 3: superseded by line 5 (same sku 'R-2')",
    ]
    assert summary(out)["superseded"] == "1"
    assert dict(Product.objects.values_list("sku", "name")) == {
        "R-1": "Second",
        "R-2": "Again",
    }


def test_unknown_columns_are_reported_once_and_ignored(tmp_path):
    owner = UserFactory()
    path = write(
        tmp_path,
        "p.csv",
        "sku,name,colour,price,category,owner,_note\n"
        + f"C-1,Cup,red,1.00,c,{owner.email},x\n"
        + f"C-2,Mug,blue,2.00,c,{owner.email},y\n",
    )

    out, err = run(str(path))

    assert err.splitlines() == [
        "line 1: unknown column(s) 'colour'; expected sku, name, slug, description,"
        " price, stock, is_active, category, owner; ignored"
    ]
    assert summary(out)["created"] == "2"
    assert Product.objects.get(sku="C-2").name == "Mug"


def test_unknown_jsonl_keys_are_reported_once_and_ignored(tmp_path):
    owner = UserFactory()
    row = {"name": "A", "price": "1.00", "category": "c", "owner": owner.email}
    path = write(
        tmp_path,
        "p.jsonl",
        "\n".join(
            json.dumps(x)
            for x in [
                {**row, "sku": "J-1", "colour": "red"},
                {**row, "sku": "J-2", "colour": "blue", "size": "L"},
            ]
        ),
    )

    _, err = run(str(path))

    assert err.splitlines() == [
        "line 1: unknown key(s) 'colour'; expected sku, name, slug, description,"
        " price, stock, is_active, category, owner; ignored",
        "line 2: unknown key(s) 'size'; expected sku, name, slug, description,"
        " price, stock, is_active, category, owner; ignored",
    ]
    assert Product.objects.count() == 2


def test_unknown_columns_with_strict_refuse_the_file(tmp_path):
    owner = UserFactory()
    path = write(
        tmp_path,
        "p.csv",
        "sku,name,colour,price,category\n" + "C-1,Cup,red,1.00,c\n",
    )

    message, _, _ = run_failing(str(path), "--strict", "--owner", owner.email)

    assert message == (
        f"{path}: line 1: unknown column(s) 'colour'; expected sku, name, slug,"
        " description, price, stock, is_active, category, owner"
    )
    assert not Product.objects.exists()
