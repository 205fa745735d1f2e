"""The scale-out topology with real components (issue 16, part 2).

Debian's nginx running docker/nginx.conf in front of two app servers
(`python -m config.serve`), a PostgreSQL primary with a streaming standby
(the session's `postgres_pair`) and a private Redis: bench/cluster.py, the
code `make cluster` runs.
"""

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from bench.client import Client, jwt_access_token
from bench.cluster import (
    STAFF_EMAIL,
    STAFF_PASSWORD,
    Cluster,
    nginx_binary,
    running_cluster,
)

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (.ci/run installs it)"
)

API = "/api/v1"


@pytest.fixture(scope="module")
def cluster(postgres_pair) -> Iterator[Cluster]:
    with running_cluster(
        instances=2,
        pair=postgres_pair,
    ) as running:
        yield running


def _upstreams(cluster: Cluster, tag: str, count: int = 0) -> list[str]:
    """Return the upstream of each request nginx logged with an id from *tag*.

    nginx writes a line after the answer has gone out: wait (a little) for
    *count* of them.
    """
    deadline = time.monotonic() + 10
    while True:
        log = (cluster.nginx.root / "access.log").read_text()
        lines = [json.loads(line) for line in log.splitlines() if tag in line]
        found = [x["upstream"] for x in lines if x["request_id"].startswith(tag)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _get_through_nginx(cluster: Cluster, count: int, tag: str) -> list[int]:
    client = Client(cluster.nginx.base_url, timeout=30)
    return [
        client.get(
            f"{API}/products/?limit=1", headers={"X-Request-ID": f"{tag}{i}"}
        ).status
        for i in range(count)
    ]


def _ports(cluster: Cluster) -> list[str]:
    return [f"127.0.0.1:{app.port}" for app in cluster.apps]


def test_nginx_spreads_requests_over_both_instances(cluster):
    tag = f"spread-{uuid.uuid4().hex[:8]}-"
    assert _get_through_nginx(cluster, 10, tag) == [200] * 10
    upstreams = _upstreams(cluster, tag, 10)
    assert len(upstreams) == 10
    assert set(upstreams) == set(_ports(cluster))
    assert min(upstreams.count(port) for port in _ports(cluster)) >= 4


def test_a_write_on_one_instance_is_read_at_once_on_the_other(cluster):
    one, other = (Client(app.base_url, timeout=30) for app in cluster.apps)
    token = jwt_access_token(one, API, STAFF_EMAIL, STAFF_PASSWORD)
    one.headers["Authorization"] = f"Bearer {token}"
    product = other.get(f"{API}/products/?limit=1").json()["results"][0]
    detail = f"{API}/products/{product['id']}/"
    other.get(detail)
    assert other.get(detail).headers["x-cache"] == "HIT"

    for price in ("11.11", "22.22", "33.33"):
        response = one.request("PATCH", detail, json_body={"price": price})
        assert response.status == 200, response.body
        assert other.get(detail).json()["price"] == price  # cached copy replaced

    created = one.request(
        "POST",
        f"{API}/products/",
        json_body={
            "sku": f"CL-{uuid.uuid4().hex[:8]}",
            "name": "Made on one",
            "price": "5.00",
            "stock": 1,
            "category": product["category"]["id"],
        },
    )
    assert created.status == 201, created.body
    new = created.json()["id"]
    # Uncached on the other instance: the replica serves it only once it has
    # replayed the insert, else the primary does.
    assert other.get(f"{API}/products/{new}/").json()["name"] == "Made on one"
    listed = other.get(f"{API}/products/?ordering=-created_at&limit=1").json()
    assert listed["results"][0]["id"] == new


def test_killing_an_instance_loses_no_request_and_nginx_takes_it_back(cluster):
    victim = cluster.apps[0]
    tag = f"kill-{uuid.uuid4().hex[:8]}-"
    statuses: list[int] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        client = Client(cluster.nginx.base_url, timeout=30)
        index = 0
        while not stop.is_set():
            index += 1
            response = client.get(
                f"{API}/products/?limit=2&offset={index % 30}",
                headers={"X-Request-ID": f"{tag}{worker}-{index}"},
            )
            statuses.append(response.status)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        while len(statuses) < 20:
            time.sleep(0.05)
        victim.kill()
        killed_at = len(statuses)
        while len(statuses) < killed_at + 40:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    failed = [status for status in statuses if status != 200]
    # nginx retries a GET that failed before any byte reached the client
    # (proxy_next_upstream error timeout): at most the requests in flight
    # on the killed instance (one per client) may fail.
    assert len(failed) <= len(threads), failed
    assert statuses[-20:] == [200] * 20

    victim.start()  # same port: nginx tries it again after fail_timeout (10 s)
    back = f"127.0.0.1:{victim.port}"
    deadline = time.monotonic() + 45
    round_tag = f"back-{uuid.uuid4().hex[:8]}-"
    rounds = 0
    while back not in _upstreams(cluster, round_tag):
        assert time.monotonic() < deadline, "nginx never sent to the restarted instance"
        rounds += 1
        assert _get_through_nginx(cluster, 4, f"{round_tag}{rounds}-") == [200] * 4
        time.sleep(0.5)
