"""Redis failure: a real redis-server, started on a spare port and killed."""

import logging
import time

import pytest
import redis
from django.core.cache import cache
from django.urls import reverse
from prometheus_client import REGISTRY

from accounts.models import User
from config.cache.backend import last_operation_failed
from config.cache.namespaces import (
    NAMESPACE_PRODUCTS,
    bump_namespace,
    ledger,
    namespace_versions,
)
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("api:analytics-dashboard")


def cache_errors() -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "app_cache_errors":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


def cache_warnings(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "config.cache" and r.levelno == logging.WARNING
    ]


def test_dashboard_is_served_from_postgresql_while_redis_is_down(
    redis_server, auth_client, staff_user, caplog
):
    client = auth_client(staff_user)
    ProductFactory()
    assert client.get(DASHBOARD)["X-Cache"] == "MISS"
    assert client.get(DASHBOARD)["X-Cache"] == "HIT"
    errors_before = cache_errors()

    redis_server.kill()
    caplog.set_level(logging.WARNING, logger="config.cache")
    responses = [client.get(DASHBOARD) for _ in range(5)]

    assert [r.status_code for r in responses] == [200] * 5
    assert {r["X-Cache"] for r in responses} == {"MISS"}
    assert responses[-1].json()["totals"]["products"] == 1
    assert len(cache_warnings(caplog)) == 1  # once per interval, not per request
    assert cache_errors() >= errors_before + 5


def test_product_pages_are_served_from_postgresql_while_redis_is_down(
    redis_server, api_client
):
    cheapest, _, _ = (ProductFactory(price=price) for price in (1, 2, 3))
    url = "/api/v1/products/?limit=2&ordering=price"
    api_client.get(url)  # the items are rendered and kept as fragments
    redis_server.kill()
    cheapest.name = "Renamed while Redis is away"
    cheapest.save()  # its bump is missed: nothing kept may be served now
    pages = [api_client.get(url) for _ in range(2)]
    assert {(p.status_code, p["X-Cache"]) for p in pages} == {(200, "MISS")}
    assert pages[-1].json()["results"][0]["name"] == "Renamed while Redis is away"


def test_sign_in_and_throttles_fail_open_while_redis_is_down(
    redis_server, tokens_for, user
):
    redis_server.kill()
    assert set(tokens_for(user)) >= {"access", "refresh"}


def test_signed_in_reads_check_the_user_in_postgresql_while_redis_is_down(
    redis_server, auth_client, user
):
    client = auth_client(user)
    me = reverse("api:user-me")
    assert client.get(me).status_code == 200  # the user is kept by this process
    redis_server.kill()
    # No bump can reach Redis now: the kept user must not be trusted.
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert client.get(me).status_code == 401


def test_reads_survive_redis_closing_an_idle_connection(redis_server):
    cache.set("k", "v")
    assert cache.get_many(["k"]) == {"k": "v"}  # opens the read connection
    errors_before = cache_errors()
    # What a Redis restart or its idle timeout does to every open socket.
    redis.Redis.from_url(redis_server.url).client_kill_filter(_type="normal")

    assert cache.get_many(["k"]) == {"k": "v"}
    assert cache_errors() == errors_before  # retried once, not counted as down


def test_circuit_breaker_skips_redis_after_a_failure(redis_server, settings):
    settings.CACHE_RETRY_AFTER = 60
    redis_server.kill()
    cache.get("a")  # fails, opens the circuit
    errors_before = cache_errors()
    redis_server.start()  # back, but not retried until the interval ends
    assert cache.set("b", 1) is False
    assert last_operation_failed()
    assert cache_errors() == errors_before + 1


def test_cache_is_used_again_when_redis_returns(redis_server, auth_client, staff_user):
    client = auth_client(staff_user)
    redis_server.kill()
    assert client.get(DASHBOARD)["X-Cache"] == "MISS"
    redis_server.start()
    assert client.get(DASHBOARD)["X-Cache"] == "MISS"
    assert client.get(DASHBOARD)["X-Cache"] == "HIT"


def test_bump_missed_while_redis_is_unreachable_is_retried(redis_server):
    """A bump lost to an outage must not let old entries come back afterwards."""
    before = namespace_versions(NAMESPACE_PRODUCTS)
    assert before is not None
    # Redis keeps its data but stops answering for a moment (a network blip).
    redis.Redis(port=redis_server.port).execute_command("CLIENT", "PAUSE", "1500")
    bump_namespace(NAMESPACE_PRODUCTS)
    assert last_operation_failed()
    time.sleep(1.6)  # let the pause end

    after = namespace_versions(NAMESPACE_PRODUCTS)
    assert after is not None
    assert after != before
    assert not ledger.owed
