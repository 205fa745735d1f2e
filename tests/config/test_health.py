import pytest
from django.db import connection
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_the_database(
    client, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_database_migrations_and_redis(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "migrations": "ok",
        "static": "ok",
        "redis": "ok",
        "replica": "not configured",
    }
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_503_naming_static_files_when_collectstatic_never_ran(
    client, settings, tmp_path
):
    settings.STATIC_ROOT = tmp_path  # empty: no manifest
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        },
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "collectstatic" in response.json()["static"]
    assert response.json()["database"] == "ok"


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "config.cache.backend.FailOpenRedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 0.2,
                "SOCKET_TIMEOUT": 0.2,
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
)
def test_readyz_stays_ready_with_redis_down_and_says_so(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["redis"] == "down"


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_json_when_the_database_refuses(client):
    real = connection.settings_dict.copy()
    connection.close()
    connection.settings_dict["PORT"] = "1"
    try:
        response = client.get("/readyz")
    finally:
        connection.settings_dict.update(real)
        connection.close()

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["database"] == "down"
    assert "X-Request-ID" in response


# --- Probes by service name or IP ------------------------------------------------


@pytest.fixture
def production_hosts(settings):
    """Serve one site host name over HTTPS, as a deployment does."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["api.example.com"]
    settings.SECURE_SSL_REDIRECT = True


@pytest.mark.parametrize("host", ["api:8000", "10.1.2.3:8000", "[fd00::7]:8000"])
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_whatever_the_host(client, production_hosts, path, host):
    response = client.get(path, HTTP_HOST=host)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("host", ["api:8000", "10.1.2.3:8000"])
def test_metrics_answer_whatever_the_host_to_allowed_networks_only(
    client, production_hosts, settings, host
):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    scrape = client.get("/metrics", HTTP_HOST=host, REMOTE_ADDR="10.9.8.7")
    outsider = client.get("/metrics", HTTP_HOST=host, REMOTE_ADDR="203.0.113.9")

    assert scrape.status_code == 200
    assert b"django_http_requests_before_middlewares_total" in scrape.content
    assert outsider.status_code == 403


def test_other_paths_still_refuse_hosts_outside_allowed_hosts(client, production_hosts):
    response = client.get("/api/v1/products/", HTTP_HOST="api:8000", secure=True)

    assert response.status_code == 400
    assert client.get("/admin/login/", HTTP_HOST="api:8000").status_code == 400
