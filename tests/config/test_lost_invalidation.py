"""No invalidation is lost silently: Redis paused, restarted, or restored from its AOF.

Each case runs against a private redis-server (never the shared one) and
writes from another OS process (``manage.py``), as an operator would, while
this process plays an API worker that had the product cached.
"""

import json
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis
from django.conf import settings as django_settings
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from catalog.models import Product
from config.cache import ledger as ledger_module
from config.cache.namespaces import (
    NAMESPACE_PRODUCTS,
    bump_on_commit,
    ledger,
    namespace_versions,
)
from config.models import CacheBump
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PRICE = "888.88"


@pytest.fixture
def operator(
    manage, redis_server, database_url
) -> Callable[..., subprocess.CompletedProcess]:
    """Return a runner of ``manage.py ARGS`` against this test's database and Redis."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return manage(
            *args,
            DATABASE_URL=database_url,
            REDIS_URL=redis_server.url,
            CACHE_KEY_PREFIX=django_settings.CACHES["default"]["KEY_PREFIX"],
            SECRET_KEY="operator-" + "x" * 50,
            ALLOWED_HOSTS="testserver",
            SECURE_SSL_REDIRECT="False",
            **env,
        )

    return run


@pytest.fixture
def cached_product() -> tuple[Product, str]:
    """Return a product whose detail this process has cached (a HIT), and its URL."""
    product = ProductFactory(price=Decimal("10.00"))
    url = reverse("api:product-detail", args=[product.pk])
    client = APIClient()
    assert client.get(url)["X-Cache"] == "MISS"
    assert client.get(url)["X-Cache"] == "HIT"
    return product, url


def pause(server, milliseconds: int) -> float:
    """Pause every client of *server*; return when the pause ends (monotonic).

    Redis 7.0 pauses even ``CLIENT UNPAUSE`` from a new connection, so each
    test waits for its pause to run out.
    """
    redis.Redis(port=server.port, protocol=2).execute_command(
        "CLIENT", "PAUSE", str(milliseconds), "ALL"
    )
    return time.monotonic() + milliseconds / 1000


def wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()) + 0.3)


def shell_update(product: Product) -> str:
    return (
        "from catalog.models import Product;"
        f"Product.objects.filter(pk={product.pk}).update(price='{NEW_PRICE}')"
    )


def price_seen(url: str) -> tuple[str, str]:
    response = APIClient().get(url)
    assert response.status_code == 200
    return response["X-Cache"], response.json()["price"]


def test_an_import_that_cannot_invalidate_says_so_and_workers_replay_it(
    operator, cached_product, redis_server, settings, tmp_path
):
    product, url = cached_product
    path = tmp_path / "p.csv"
    path.write_text(
        f"sku,name,price,category,owner\n{product.sku},{product.name},{NEW_PRICE},"
        f"{product.category.slug},{product.owner.email}\n"
    )
    settings.CACHE_LEDGER_POLL = 0.2
    assert price_seen(url) == ("HIT", "10.00")  # starts this process's poll clock
    ends = pause(redis_server, 12_000)  # past the command's start and its wait

    done = operator("import_products", str(path), CACHE_INVALIDATION_WAIT="1")
    wait_until(ends)

    assert done.returncode == 1, done.stderr
    assert "Cache invalidation failed" in done.stderr
    # This process (an API worker) replays the recorded bump before its read.
    assert price_seen(url) == ("MISS", NEW_PRICE)


def test_a_shell_write_during_a_short_redis_pause_waits_and_invalidates(
    operator, cached_product, redis_server
):
    product, url = cached_product
    pause(redis_server, 5000)

    done = operator("shell", "-c", shell_update(product))

    assert done.returncode == 0, done.stderr
    assert price_seen(url) == ("MISS", NEW_PRICE)


def test_a_command_that_cannot_invalidate_says_so_and_workers_replay_it(
    operator, cached_product, redis_server, settings
):
    product, url = cached_product
    settings.CACHE_LEDGER_POLL = 0.2
    assert price_seen(url) == ("HIT", "10.00")  # starts this process's poll clock
    ends = pause(redis_server, 12_000)

    done = operator("shell", "-c", shell_update(product), CACHE_INVALIDATION_WAIT="1")
    wait_until(ends)

    assert done.returncode == 1
    assert "Cache invalidation failed" in done.stderr
    assert "CACHE_INVALIDATION_WAIT" in done.stderr
    # This process (an API worker) replays the recorded bump before its read.
    assert price_seen(url) == ("MISS", NEW_PRICE)


def test_a_write_while_redis_restarts_empty_is_never_served_stale(
    operator, cached_product, redis_server
):
    product, url = cached_product
    redis_server.kill()

    done = operator("shell", "-c", shell_update(product), CACHE_INVALIDATION_WAIT="0")
    redis_server.start()

    assert done.returncode == 1
    assert "Cache invalidation failed" in done.stderr
    assert price_seen(url) == ("MISS", NEW_PRICE)


@pytest.fixture
def persistent(redis_server, tmp_path):
    """Restart the private Redis with an append-only file, fsynced at every write."""
    redis_server.kill()
    redis_server.extra_args = [
        *("--appendonly", "yes", "--appendfsync", "always"),
        *("--dir", str(tmp_path)),
    ]
    redis_server.start()
    return redis_server


def test_a_shell_write_while_redis_is_down_is_not_undone_by_its_aof(
    persistent, operator, cached_product
):
    product, url = cached_product
    persistent.process.kill()  # SIGKILL: the entry and its versions are in the AOF
    persistent.process.wait()

    done = operator("shell", "-c", shell_update(product), CACHE_INVALIDATION_WAIT="0")
    persistent.start()  # restored from the AOF, as before the write

    assert done.returncode == 1
    assert price_seen(url) == ("MISS", NEW_PRICE)


def test_an_api_write_while_redis_is_down_is_not_undone_by_its_aof(
    persistent, operator, cached_product, auth_client, staff_user
):
    product, url = cached_product
    persistent.process.kill()
    persistent.process.wait()
    response = auth_client(staff_user).patch(url, {"price": NEW_PRICE}, format="json")
    assert response.status_code == 200, response.content
    persistent.start()

    # Another worker, which never knew of the missed bump, reads it.
    read = (
        "import json; from django.test import Client;"
        f"r = Client().get('{url}');"
        "print(json.dumps([r['X-Cache'], r.json()['price']]))"
    )
    done = operator("shell", "-c", read)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["MISS", NEW_PRICE]


def _bumps() -> int:
    return CacheBump.objects.count()


def _versions_after_commit() -> dict[str, str] | None:
    with transaction.atomic():
        bump_on_commit(NAMESPACE_PRODUCTS)
    return namespace_versions(NAMESPACE_PRODUCTS)


def test_delivered_bumps_are_deleted_in_batches_and_not_replayed(
    redis_server, monkeypatch
):
    # Delivered at commit; the row waits for its batch.
    delivered = _versions_after_commit()
    assert _bumps() == 1
    # A poll deletes this process's delivered rows before it reads the table:
    # nothing is bumped again.
    ledger.catch_up(force=True)
    assert _bumps() == 0
    assert namespace_versions(NAMESPACE_PRODUCTS) == delivered

    monkeypatch.setattr(ledger_module, "FORGET_BATCH", 3)
    _versions_after_commit()
    _versions_after_commit()
    assert _bumps() == 2
    _versions_after_commit()  # the third makes a batch
    assert _bumps() == 0

    monkeypatch.setattr(ledger_module, "FORGET_AFTER", 0.0)
    _versions_after_commit()
    _versions_after_commit()  # the first one's batch is due by now
    assert _bumps() == 0


def test_a_command_deletes_its_delivered_bumps_before_it_exits(redis_server):
    _versions_after_commit()
    assert _bumps() == 1

    assert ledger.finish(wait=1.0) is None

    assert _bumps() == 0


def test_a_user_deactivated_while_redis_misses_the_bump_cannot_write(
    operator, redis_server, settings, auth_client, user
):
    # Until this worker's next poll of the ledger, the "users" version in
    # Redis is the one it memoised the user under: only PostgreSQL knows.
    settings.CACHE_LEDGER_POLL = 30
    product = ProductFactory(owner=user)
    url = reverse("api:product-detail", args=[product.pk])
    client = auth_client(user)
    assert client.patch(url, {"stock": 1}, format="json").status_code == 200
    ends = pause(redis_server, 6000)

    done = operator(
        "shell",
        "-c",
        "from accounts.models import User;"
        "from accounts.services import users_set_active;"
        f"users_set_active(users=User.objects.filter(pk={user.pk}), active=False)",
        CACHE_INVALIDATION_WAIT="0",
    )
    wait_until(ends)

    assert done.returncode == 1, done.stderr  # the bump is recorded, not applied
    assert client.patch(url, {"stock": 2}, format="json").status_code == 401
    assert Product.objects.get(pk=product.pk).stock == 1
