import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client) -> dict:
    response = client.get(
        "/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    assert response.status_code == 200
    return response.json()


def _operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [
        (method, path, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]


def test_operation_ids_start_after_the_api_prefix(schema):
    operation_ids = {op["operationId"] for _, _, op in _operations(schema)}

    assert {"products_list", "products_bulk_create", "categories_create"} <= (
        operation_ids
    )
    assert {"auth_token_create", "users_me_retrieve"} <= operation_ids
    assert not [name for name in operation_ids if name.startswith("v1")]


def test_operations_are_tagged_by_resource(schema):
    tags = {path: op["tags"] for _, path, op in _operations(schema)}

    assert tags["/api/v1/products/"] == ["products"]
    assert tags["/api/v1/products/bulk/"] == ["products"]
    assert tags["/api/v1/categories/{id}/"] == ["categories"]
    assert {tag for value in tags.values() for tag in value} == {
        "analytics",
        "auth",
        "categories",
        "products",
        "users",
    }


@pytest.mark.parametrize("url", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_nothing_from_another_origin(client, url):
    response = client.get(url)

    assert response.status_code == 200
    page = response.content.decode()
    assert not re.findall(r"(?:src|href)=[\"']?(?:https?:)?//", page)
    for script in re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page):
        assert script.startswith(url) or script.startswith(settings.STATIC_URL)
        if script.startswith(settings.STATIC_URL):
            # Shipped in an installed package (collectstatic serves it).
            assert finders.find(script.removeprefix(settings.STATIC_URL)), script


def test_redoc_renders_the_schema_under_the_content_security_policy(client):
    response = client.get("/api/redoc/")

    page = response.content.decode()
    assert '<redoc spec-url="/api/schema/"' in page
    # No inline script (script-src 'self'); the search worker starts from blob:.
    assert not re.search(r"<script>\S", page.replace("\n", ""))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "worker-src 'self' blob:" in policy
