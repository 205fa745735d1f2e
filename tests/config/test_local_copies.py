"""Local copies of Redis values, invalidated by Redis (CLIENT TRACKING).

Most tests run against a private redis-server, so its command counts are this
test's alone. "Another process" is a plain redis-py client: its writes reach
this process only through Redis's invalidation messages.
"""

import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import cache, caches
from django.urls import reverse
from rest_framework.test import APIClient

import config.cache.namespaces
from catalog.models import Product
from config.cache.backend import FailOpenRedisCache, last_operation_failed
from config.cache.local_copies import LocalCopies
from config.cache.namespaces import NAMESPACE_PRODUCTS, namespace_versions
from config.cache.views import get_or_compute
from tests.factories import ProductFactory

ROOT = Path(__file__).resolve().parents[2]


def mgets(server) -> int:
    """Return how many MGETs the private server has answered."""
    stats = redis.Redis(port=server.port, protocol=2).info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def other_process(server) -> redis.Redis:
    return redis.Redis(port=server.port, protocol=2)


def redis_name(key: str) -> str:
    return cache.make_key(key)


def test_a_value_read_before_is_served_without_a_round_trip(redis_server):
    cache.set("k", "v")
    assert cache.get_many(["k"]) == {"k": "v"}
    before = mgets(redis_server)

    for _ in range(5):
        assert cache.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before


def test_a_write_by_another_process_reaches_the_next_read(redis_server):
    cache.set("k", "old")
    assert cache.get_many(["k"]) == {"k": "old"}
    writer = other_process(redis_server)
    writer.set(redis_name("k"), pickle.dumps("new"))
    writer.ping()  # what bump_namespace does after a write: see await_invalidations

    assert cache.get_many(["k"]) == {"k": "new"}


def test_a_delete_or_flush_by_another_process_drops_the_copies(redis_server):
    cache.set_many({"a": 1, "b": 2})
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    writer = other_process(redis_server)
    writer.delete(redis_name("a"))
    writer.ping()
    assert cache.get_many(["a", "b"]) == {"b": 2}

    writer.flushdb()
    writer.ping()
    assert cache.get_many(["b"]) == {}


def test_own_writes_are_read_at_once_by_every_thread_of_the_process(redis_server):
    cache.set("k", "old")
    ready, written, readers, seen = threading.Event(), threading.Event(), [], []

    def reader():
        assert cache.get_many(["k"]) == {"k": "old"}  # kept by this thread
        readers.append(caches["default"].reader())
        ready.set()
        written.wait(5)
        seen.append(cache.get_many(["k"]))
        caches.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    assert ready.wait(5)
    copies = readers[0].copies
    assert copies.get(redis_name("k")) is not None
    cache.set("k", "new")
    # Gone before the reader has looked at Redis's invalidation message.
    assert copies.get(redis_name("k")) is None
    written.set()
    thread.join(5)
    assert seen == [{"k": "new"}]


def test_a_lost_connection_drops_the_copies(redis_server):
    cache.set("k", "old")
    assert cache.get_many(["k"]) == {"k": "old"}
    writer = other_process(redis_server)
    # Kill this process's read connection, then write: the invalidation has
    # no connection to travel on.
    writer.client_kill_filter(_type="normal", skipme=True)
    writer.set(redis_name("k"), pickle.dumps("new"))

    assert cache.get_many(["k"]) == {"k": "new"}


def test_a_lost_invalidation_connection_drops_the_copies(redis_server):
    cache.set("k", "old")
    assert cache.get_many(["k"]) == {"k": "old"}
    writer = other_process(redis_server)
    writer.client_kill_filter(_type="pubsub")  # where invalidations arrive
    writer.set(redis_name("k"), pickle.dumps("new"))

    assert cache.get_many(["k"]) == {"k": "new"}


def test_copies_are_trusted_only_within_the_lease(redis_server):
    cache.set("k", "v")
    assert cache.get_many(["k"]) == {"k": "v"}
    before = mgets(redis_server)
    assert cache.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before

    reader = caches["default"].reader()
    reader.confirmed_at -= reader.lease  # the lease runs out
    assert cache.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before + 1  # asked Redis, and renewed it
    assert cache.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before + 1


def test_local_copies_can_be_switched_off(redis_server, settings):
    settings.CACHE_LOCAL_MAX_BYTES = 0  # read when the backend is made, below
    cache.set("k", "v")
    before = mgets(redis_server)
    for _ in range(3):
        assert cache.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before + 3


def test_without_client_tracking_every_read_asks_redis(
    redis_server, caplog, monkeypatch
):
    other_process(redis_server).execute_command(
        "ACL", "SETUSER", "reader", "on", ">secret", "~*", "&*", "+@all",
        "-client|tracking",
    )  # fmt: skip
    params = {
        **django_settings.CACHES["default"],
        "LOCATION": f"redis://reader:secret@127.0.0.1:{redis_server.port}/0",
    }
    caplog.set_level(logging.WARNING, logger="config.cache")
    backend = FailOpenRedisCache(params["LOCATION"], params)
    backend.set("k", "v")
    before = mgets(redis_server)

    for _ in range(3):
        assert backend.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before + 3
    assert [r.getMessage() for r in caplog.records if "TRACKING" in r.getMessage()]


def test_a_server_without_resp3_still_serves_local_copies(redis_server, settings):
    redis_server.kill()
    redis_server.extra_args = ["--rename-command", "HELLO", ""]
    redis_server.start()
    default = settings.CACHES["default"]
    options = default["OPTIONS"]
    settings.CACHES = {  # the pool on RESP2, which that server still speaks
        "default": {
            **default,
            "OPTIONS": {**options, "CONNECTION_POOL_KWARGS": {"protocol": 2}},
        }
    }
    cache.set("k", "v")
    before = mgets(redis_server)

    for _ in range(3):
        assert cache.get_many(["k"]) == {"k": "v"}
    assert mgets(redis_server) == before + 1  # then from the copies
    assert not last_operation_failed()


def test_a_burst_of_invalidations_is_applied_without_recursion(redis_server):
    keys = [f"k{i}" for i in range(3000)]
    cache.set_many(dict.fromkeys(keys, 1))
    assert len(cache.get_many(keys)) == 3000
    backend = caches["default"]
    writer = other_process(redis_server)
    writer.delete(*[redis_name(k) for k in keys])  # 3,000 invalidations
    writer.ping()
    # Applied one by one before the next read, whatever their number.
    assert cache.get_many(["k0"]) == {}
    assert len(backend.reader().copies) == 0


def test_writes_forget_the_keys_they_name_whatever_the_arguments(redis_server):
    cache.set_many({"a": 1, "b": 2}, version=2)
    assert cache.get_many(["a", "b"], version=2) == {"a": 1, "b": 2}
    copies = caches["default"].reader().copies
    assert copies.get(cache.make_key("a", version=2)) is not None

    assert cache.delete_many(iter(["a", "b"]), version=2) == 2
    assert copies.get(cache.make_key("a", version=2)) is None
    assert cache.get_many(["a", "b"], version=2) == {}


def test_another_thread_on_the_same_backend_uses_the_pool(redis_server, monkeypatch):
    cache.set("k", "v")
    backend = caches["default"]
    assert backend.get_many(["k"]) == {"k": "v"}  # opens this thread's connection
    owner = threading.get_ident()
    reader = backend.reader()
    mget = reader.mget

    def owner_only(names):
        assert threading.get_ident() == owner, "another thread used the connection"
        return mget(names)

    monkeypatch.setattr(reader, "mget", owner_only)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(backend.get_many(["k"])))
    thread.start()
    thread.join(5)
    assert seen == [{"k": "v"}]
    assert not last_operation_failed()


def test_an_entry_is_not_served_past_its_timeout(redis_server, monkeypatch):
    assert get_or_compute("e", lambda: b"1", timeout=60) == (b"1", False)
    assert get_or_compute("e", lambda: b"2", timeout=60) == (b"1", True)
    # Redis has not expired the key yet, and the local copy is still there.
    later = time.time() + 61
    clock = types.SimpleNamespace(
        time=lambda: later, monotonic=time.monotonic, sleep=time.sleep
    )
    monkeypatch.setattr(config.cache.namespaces, "time", clock)  # entries expiry
    assert get_or_compute("e", lambda: b"3", timeout=60) == (b"3", False)


def test_copies_keep_within_their_byte_budget():
    entry = LocalCopies.size("a", b"1234")
    copies = LocalCopies(max_bytes=2 * entry)
    copies.put("a", b"1234")
    copies.put("b", b"1234")
    assert copies.get("a") == b"1234"  # a is now the most recently used
    copies.put("c", b"1234")
    assert (copies.get("a"), copies.get("b"), copies.get("c")) == (
        b"1234",
        None,
        b"1234",
    )
    copies.put("huge", b"x" * 2 * entry)
    assert copies.get("huge") is None
    copies.discard(["a"])
    assert len(copies) == 1
    copies.put("d", b"1234")
    copies.put("e", b"1234")
    assert len(copies) == 2


@pytest.mark.django_db(transaction=True)
def test_a_write_in_another_process_reaches_the_next_api_read(settings, database_url):
    """The whole chain: another process's committed update, then this process's GET."""
    product = ProductFactory(name="Before")
    client = APIClient()
    url = reverse("api:product-detail", args=[product.pk])
    assert client.get(url)["X-Cache"] == "MISS"
    assert client.get(url)["X-Cache"] == "HIT"  # served from this process's copies

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": django_settings.CACHES["default"]["LOCATION"],
        "CACHE_KEY_PREFIX": django_settings.CACHES["default"]["KEY_PREFIX"],
        "SECRET_KEY": "another-process-" + "x" * 40,
    }
    code = (
        "from catalog.models import Product;"
        f"Product.objects.filter(pk={product.pk}).update(name='After')"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )

    response = client.get(url)
    assert response["X-Cache"] == "MISS"
    assert response.json()["name"] == "After"
    assert Product.objects.get(pk=product.pk).name == "After"
    assert namespace_versions(NAMESPACE_PRODUCTS) is not None


def test_writes_on_the_thread_connection_keep_django_semantics(
    redis_server, monkeypatch
):
    backend = caches["default"]
    assert backend._fast_writes()  # one server: reads and writes share it
    backend.reader()  # this thread's connection, made from the pool's settings

    def no_pool(*args, **kwargs):
        raise AssertionError("a plain write went through django-redis's pool")

    monkeypatch.setattr(backend.client, "get_client", no_pool)
    other = other_process(redis_server)
    assert cache.set("k", {"v": 1}, 60) is True
    assert pickle.loads(other.get(redis_name("k"))) == {"v": 1}  # noqa: S301 - ours
    assert 59_000 <= other.pttl(redis_name("k")) <= 60_000
    assert cache.set("forever", 1, None) is True
    assert other.ttl(redis_name("forever")) == -1
    assert other.get(redis_name("forever")) == b"1"  # ints as digits, as before

    assert cache.add("k", "other", 60) is False
    assert cache.add("fresh", "v", 60) is True
    assert cache.get_many(["fresh"]) == {"fresh": "v"}

    assert cache.delete("fresh") is True
    assert cache.delete("fresh") is False
    monkeypatch.undo()
    # Timeouts under a millisecond delete, as in django-redis (through it).
    cache.set("k", "v", 0.0004)
    cache.set("fresh", "v", 0)
    assert other.exists(redis_name("k"), redis_name("fresh")) == 0
    assert not last_operation_failed()


def test_a_write_after_redis_closed_the_connection_reconnects(redis_server):
    assert cache.set("k", "v", 60) is True
    other = other_process(redis_server)
    other.client_kill_filter(_type="normal", skipme=True)

    assert cache.set("k", "w", 60) is True
    assert not last_operation_failed()
    assert pickle.loads(other.get(redis_name("k"))) == "w"  # noqa: S301 - ours
