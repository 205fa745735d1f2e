from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from catalog.management.commands.seed_demo import Command as SeedDemo
from catalog.models import Category, Product
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def snapshot() -> list[tuple]:
    return list(
        Product.objects.order_by("sku").values_list(
            "sku",
            "name",
            "price",
            "stock",
            "is_active",
            "category__slug",
            "owner__email",
        )
    )


def test_seed_creates_the_requested_rows_with_a_parseable_summary():
    output = seed("--users", "20", "--products", "150", "--categories", "5")

    assert User.objects.count() == 20
    assert Category.objects.count() == 5
    assert Product.objects.count() == 150
    assert "users_created=20 products_created=150" in output


def test_rerun_creates_no_duplicates_and_changes_nothing():
    seed("--users", "10", "--products", "80", "--categories", "4", "--seed", "3")
    before = snapshot()

    output = seed(
        "--users", "10", "--products", "80", "--categories", "4", "--seed", "3"
    )

    assert "users_created=0 products_created=0" in output
    assert snapshot() == before
    assert User.objects.count() == 10


def test_growing_the_demo_keeps_existing_rows_and_adds_the_rest():
    seed("--users", "5", "--products", "30", "--categories", "3")
    before = snapshot()

    seed("--users", "8", "--products", "50", "--categories", "3")

    assert Product.objects.count() == 50
    assert User.objects.count() == 8
    assert snapshot()[:30] == before


def test_same_seed_gives_the_same_data_and_another_seed_differs():
    seed("--users", "5", "--products", "40", "--categories", "4", "--seed", "7")
    first = snapshot()
    Product.objects.all().delete()
    User.objects.all().delete()

    seed("--users", "5", "--products", "40", "--categories", "4", "--seed", "7")
    again = snapshot()
    Product.objects.all().delete()
    seed("--users", "5", "--products", "40", "--categories", "4", "--seed", "8")

    assert again == first
    assert snapshot() != first


def test_data_is_realistic_and_spread_over_two_years():
    seed("--users", "30", "--products", "400", "--categories", "8")
    now = timezone.now()
    created = list(Product.objects.values_list("created_at", flat=True))
    prices = list(Product.objects.values_list("price", flat=True))

    assert all(now - timedelta(days=731) <= c <= now for c in created)
    assert any(c >= now - timedelta(days=30) for c in created)
    assert any(c <= now - timedelta(days=365) for c in created)
    assert min(prices) >= 0 and len(set(prices)) > 50
    assert Product.objects.filter(stock=0).exists()
    assert Product.objects.filter(stock__gt=0, stock__lt=10).exists()
    assert Product.objects.values("category").distinct().count() == 8
    assert Product.objects.exclude(slug="").count() == 400


def test_without_password_demo_users_cannot_sign_in():
    seed("--users", "3", "--products", "0", "--categories", "0")

    assert not any(u.has_usable_password() for u in User.objects.all())


def test_password_is_hashed_once_and_works_for_every_demo_user():
    seed(
        "--users",
        "3",
        "--products",
        "0",
        "--categories",
        "0",
        "--password",
        "demo-pass-123",
    )
    users = list(User.objects.all())

    assert len({u.password for u in users}) == 1
    assert all(u.check_password("demo-pass-123") for u in users)


def test_products_without_demo_users_belong_to_existing_users():
    owner = UserFactory()

    seed("--users", "0", "--products", "10", "--categories", "2")

    assert set(Product.objects.values_list("owner_id", flat=True)) == {owner.pk}


def test_products_without_any_user_is_a_command_error():
    with pytest.raises(CommandError, match="owner"):
        seed("--users", "0", "--products", "10", "--categories", "2")

    assert not Product.objects.exists()


def test_a_demo_username_already_taken_skips_that_user_only():
    seed("--users", "2", "--products", "0", "--categories", "0")
    first = User.objects.order_by("email").first()
    username = first.username
    User.objects.all().delete()
    UserFactory(email="someone@else.example", username=username)

    output = seed("--users", "2", "--products", "0", "--categories", "0")

    assert "users_created=1" in output
    assert User.objects.filter(username=username).get().email == (
        "someone@else.example"
    )


class TerminalIO(StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_is_drawn_on_a_terminal_only():
    terminal, piped = TerminalIO(), StringIO()

    # Built as manage.py builds it, so standard error has its error style.
    command = SeedDemo(stderr=terminal, force_color=True)
    call_command(command, "--users", "3", "--products", "1500", stdout=StringIO())
    call_command(
        "seed_demo", "--users", "3", "--products", "1500", "--seed", "2",
        stdout=StringIO(), stderr=piped,
    )  # fmt: skip

    drawn = terminal.getvalue()
    # The first update always draws; later ones at most every 0.25 s.
    assert drawn.startswith("\r[") and "rows/s" in drawn and "ETA" in drawn
    # Drawn as plain text, not in standard error's bold red.
    assert "\x1b[31" not in drawn
    assert piped.getvalue() == ""


# The field indexes migrations make (Django's names): the unique username's
# and SKU's LIKE indexes and the owner foreign key's, deferred with the
# Meta.indexes.
FIELD_INDEXES = {
    "accounts_user_username_6088629e_like",
    "catalog_product_sku_5c54c070_like",
    "catalog_product_owner_id_3142d196",
}
DEFERRED_INDEXES = {
    *(i.name for i in (*User._meta.indexes, *Product._meta.indexes)),
    *FIELD_INDEXES,
}


def model_indexes_present() -> set[str]:
    tables = [User._meta.db_table, Product._meta.db_table]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s)", [tables]
        )
        present = {name for (name,) in cursor.fetchall()}
    return present & DEFERRED_INDEXES


def test_deferred_indexes_are_dropped_for_the_load_and_built_back():
    wanted = DEFERRED_INDEXES
    with CaptureQueriesContext(connection) as queries:
        seed("--users", "3", "--products", "20", "--categories", "2", "--defer-indexes")

    sql = [query["sql"] for query in queries.captured_queries]
    dropped = {s.split('"')[1] for s in sql if s.startswith("DROP INDEX")}
    built = {s.split('"')[1] for s in sql if s.startswith("CREATE INDEX")}
    assert dropped == built == wanted
    assert model_indexes_present() == wanted
    assert Product.objects.count() == 20


def test_small_loads_keep_the_indexes_in_place():
    with CaptureQueriesContext(connection) as queries:
        seed("--users", "3", "--products", "20", "--categories", "2")

    assert not [q for q in queries.captured_queries if "INDEX" in q["sql"]]
    assert model_indexes_present() == DEFERRED_INDEXES
