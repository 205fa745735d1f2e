"""The read replica against a real streaming standby (issue 13, case 2).

A private primary and a standby made with `pg_basebackup -R` (the session's
`postgres_pair`), a private Redis and one app server started as `make run`
serves it, with DATABASE_REPLICA_URL set. pg_stat_statements on each server
tells which one ran a statement.
"""

import re
import time
from collections.abc import Iterator

import pytest

from bench.client import Client, jwt_access_token
from bench.cluster import STAFF_EMAIL, STAFF_PASSWORD, Cluster, running_cluster

API = "/api/v1"
DATABASE = "app"  # running_cluster's


@pytest.fixture(scope="module")
def cluster(postgres_pair) -> Iterator[Cluster]:
    with running_cluster(
        instances=1,
        pair=postgres_pair,
        front=False,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(cluster) -> str:
    return cluster.apps[0].base_url


def _client(base_url: str, email: str | None = None) -> Client:
    client = Client(base_url, timeout=30)
    if email:
        token = jwt_access_token(client, API, email, STAFF_PASSWORD)
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def _register(base_url: str, name: str) -> tuple[Client, int]:
    email = f"{name}@replica.invalid"
    response = Client(base_url).request(
        "POST",
        f"{API}/users/",
        json_body={"email": email, "username": name, "password": STAFF_PASSWORD},
    )
    assert response.status == 201, response.body
    return _client(base_url, email), int(response.json()["id"])


def _statements(cluster: Cluster, table: str) -> tuple[int, int]:
    """Return (primary, standby) counts of statements naming *table*."""
    pair = cluster.pair
    return (
        pair.statements(DATABASE, table, standby=False),
        pair.statements(DATABASE, table, standby=True),
    )


def _metric(base_url: str, reason: str) -> float:
    body = Client(base_url).get("/metrics").body.decode()
    pattern = rf'^app_replica_reads_total\{{(?=[^}}]*reason="{reason}")[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, body, re.MULTILINE))


def _first_product(base_url: str) -> int:
    page = Client(base_url).get(f"{API}/products/?limit=1").json()
    return int(page["results"][0]["id"])


def test_uncached_reads_and_the_signed_in_lookup_go_to_the_replica(cluster, base_url):
    reader, _ = _register(base_url, "reader")
    cluster.pair.wait_caught_up()
    anonymous = Client(base_url)
    primary_before, standby_before = _statements(cluster, "catalog_product")
    for offset in range(20):
        response = anonymous.get(f"{API}/products/?limit=2&offset={offset}")
        assert (response.status, response.headers["x-cache"]) == (200, "MISS")
    primary_after, standby_after = _statements(cluster, "catalog_product")
    assert standby_after - standby_before >= 20
    assert primary_after == primary_before

    _, users_before = _statements(cluster, "accounts_user")
    assert reader.get(f"{API}/users/me/").status == 200
    _, users_after = _statements(cluster, "accounts_user")
    assert users_after > users_before
    assert _metric(base_url, "current") > 0


def test_a_lagging_replica_never_feeds_the_cache_or_the_signed_in_lookup(
    cluster, base_url
):
    staff = _client(base_url, STAFF_EMAIL)
    victim, victim_id = _register(base_url, "victim")
    assert victim.get(f"{API}/users/me/").status == 200  # remembered as active
    product = f"{API}/products/{_first_product(base_url)}/"
    anonymous = Client(base_url)
    anonymous.get(product)
    assert anonymous.get(product).headers["x-cache"] == "HIT"
    page = f"{API}/products/?limit=1"
    anonymous.get(page)  # the product's list item is kept as a fragment
    cluster.pair.wait_caught_up()
    lagging_before = _metric(base_url, "lagging")

    cluster.pair.pause_replay()
    try:
        response = staff.request("PATCH", product, json_body={"price": "123.45"})
        assert response.status == 200, response.body
        primary_before, standby_before = _statements(cluster, "catalog_product")
        response = anonymous.get(product)
        assert response.headers["x-cache"] == "MISS"
        assert response.json()["price"] == "123.45"
        # Its list item too: the page and the fragment are refilled from
        # the primary.
        response = anonymous.get(page)
        assert response.headers["x-cache"] == "MISS"
        assert response.json()["results"][0]["price"] == "123.45"
        primary_after, standby_after = _statements(cluster, "catalog_product")
        assert primary_after > primary_before
        assert standby_after == standby_before

        # A deactivation takes effect at once although the replica still
        # holds the account as active.
        assert staff.request("DELETE", f"{API}/users/{victim_id}/").status == 204
        assert victim.get(f"{API}/users/me/").status == 401

        ready = Client(base_url).get("/readyz")
        assert ready.status == 200
        assert ready.json()["replica"] == "lagging"
        assert _metric(base_url, "lagging") > lagging_before
    finally:
        cluster.pair.resume_replay()

    # (The deactivation changed an owner: the entry is filled again.)
    assert anonymous.get(product).json()["price"] == "123.45"
    response = anonymous.get(product)
    assert (response.headers["x-cache"], response.json()["price"]) == (
        "HIT",
        "123.45",
    )
    assert Client(base_url).get("/readyz").json()["replica"] == "ok"


def test_a_stopped_replica_fails_no_request_and_readyz_says_so(cluster, base_url):
    writer, _ = _register(base_url, "writer")
    reader, _ = _register(base_url, "stopped")
    product = f"{API}/products/{_first_product(base_url)}/"
    assert reader.get(f"{API}/users/me/").status == 200
    down_before = _metric(base_url, "down")

    cluster.pair.stop_standby()
    try:
        response = writer.request(
            "PATCH", f"{API}/users/me/", json_body={"username": "w2"}
        )
        assert response.status == 200, response.body
        statuses = []
        for index in range(16):
            statuses.append(reader.get(f"{API}/users/me/").status)
            statuses.append(
                reader.get(f"{API}/products/?limit=3&offset={index}").status
            )
            statuses.append(reader.get(product).status)
        assert statuses == [200] * 48
        ready = Client(base_url).get("/readyz")
        assert ready.status == 200
        assert (ready.json()["database"], ready.json()["replica"]) == ("ok", "down")
        assert _metric(base_url, "down") > down_before
    finally:
        cluster.pair.start_standby()
    cluster.pair.wait_caught_up()

    # Back on the replica once DB_REPLICA_RETRY_AFTER (1 s here) has passed.
    _, standby_before = _statements(cluster, "catalog_product")
    deadline = time.monotonic() + 20
    offset = 100
    while _statements(cluster, "catalog_product")[1] == standby_before:
        assert time.monotonic() < deadline, "reads never went back to the replica"
        offset += 1
        assert reader.get(f"{API}/products/?limit=1&offset={offset}").status == 200
        time.sleep(0.2)
    assert Client(base_url).get("/readyz").json()["replica"] == "ok"
