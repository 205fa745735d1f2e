from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from config.metrics import (
    BULK_ROWS_WRITTEN,
    CACHE_ERRORS,
    CACHE_HITS,
    CACHE_MISSES,
    DB_UNAVAILABLE,
    TASKS_ENQUEUED,
    THROTTLED_REQUESTS,
)
from tests.config.test_gunicorn import app_server, http_get, server_env


def _samples(text: str, name: str, **labels: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
        and all(sample.labels.get(key) == value for key, value in labels.items())
    ]


def test_metrics_are_served_to_loopback(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"django_http_requests_before_middlewares_total" in response.content


def test_metrics_are_refused_to_other_networks(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    response = client.get("/metrics", REMOTE_ADDR="192.0.2.7")

    assert response.status_code == 403
    assert "detail" in response.json()


def test_metrics_are_served_to_an_allow_listed_network(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_a_forwarded_for_header_does_not_open_metrics(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]

    response = client.get(
        "/metrics", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="127.0.0.1"
    )

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("header", "status"),
    [("Bearer s3cret-scrape-token", 200), ("Bearer wrong", 403), ("", 403)],
)
def test_metrics_bearer_token(client, settings, header, status):
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = "s3cret-scrape-token"

    response = client.get(
        "/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION=header
    )

    assert response.status_code == status


def test_project_counters_are_exported(client):
    CACHE_HITS.labels(namespace="catalog").inc()
    CACHE_MISSES.labels(namespace="catalog").inc()
    CACHE_ERRORS.labels(operation="get").inc()
    THROTTLED_REQUESTS.labels(scope="login").inc()
    BULK_ROWS_WRITTEN.labels(model="product", operation="create").inc(3)
    TASKS_ENQUEUED.labels(task="send_welcome_email").inc()
    DB_UNAVAILABLE.labels(reason="timeout").inc()

    text = client.get("/metrics").content.decode()

    for name, labels in [
        ("app_cache_hits_total", {"namespace": "catalog"}),
        ("app_cache_misses_total", {"namespace": "catalog"}),
        ("app_cache_errors_total", {"operation": "get"}),
        ("app_throttled_requests_total", {"scope": "login"}),
        ("app_bulk_rows_written_total", {"model": "product", "operation": "create"}),
        ("app_tasks_enqueued_total", {"task": "send_welcome_email"}),
        ("app_db_unavailable_total", {"reason": "timeout"}),
    ]:
        assert _samples(text, name, **labels), name
    assert _samples(text, "app_bulk_rows_written_total", model="product")[0] >= 3


def test_an_empty_worker_file_does_not_fail_the_scrape(client, tmp_path, monkeypatch):
    # A worker's file exists empty until it is sized: read then (or left so
    # by a worker killed then), it used to fail every scrape with a 500.
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = mmap_key("app_probe_total", "app_probe_total", [], [], "A probe.")
    written.write_value(key, 3.0, 0)
    written.close()
    (tmp_path / "counter_102.db").touch()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert _samples(response.content.decode(), "app_probe_total") == [3.0]


def _requests_total(text: str) -> float:
    # Probes are answered before the per-view middleware runs, so they are
    # counted by the outermost one only.
    return sum(_samples(text, "django_http_requests_before_middlewares_total"))


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_three_workers_count_every_request_once_across_restarts(tmp_path, server):
    """N requests over 3 workers scrape as N; a restart starts from 0.

    gunicorn's workers are also replaced mid-run (granian's live at least
    a minute): dead workers' samples must still count.
    """
    metrics_dir = tmp_path / "prometheus"
    env = server_env(
        SERVER=server,
        WORKERS="3",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        GUNICORN_MAX_REQUESTS="10",
        GUNICORN_MAX_REQUESTS_JITTER="0",
    )
    log_path = tmp_path / "server.log"

    with app_server({**env, "WORKERS": "1"}, log_path) as url:
        for _ in range(3):
            assert http_get(f"{url}/healthz")[0] == 200

    n = 45
    with app_server(env, log_path) as url:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(lambda _: http_get(f"{url}/healthz")[0], range(n)))
        status, _, body = http_get(f"{url}/metrics")

    assert statuses == [200] * n
    assert status == 200
    # The n probes and the scrape itself (counted before it renders).
    assert _requests_total(body.decode()) == n + 1
    if server == "gunicorn":
        # Each worker process that served requests left its own sample file.
        assert len(list(metrics_dir.glob("counter_*.db"))) > 3
