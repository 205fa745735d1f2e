"""Every route of the API and the probes answers every HTTP method: never a 5xx."""

import re
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework_simplejwt.tokens import AccessToken

from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

METHODS = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "PROPFIND",  # not HTTP/1.1's, still a method a client may send
]
NOT_SERVED = {"TRACE", "PROPFIND"}
PROBES = ("healthz", "readyz", "metrics")
_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)|<(?:\w+:)?(\w+)>")


def _walk(patterns: list, prefix: str = "") -> Iterator[str]:
    """Yield each URL pattern as a regex or route string, prefixes included."""
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def _path(pattern: str, ids: dict[str, int]) -> str:
    """Return a path that *pattern* matches, with an existing object's id in it."""
    resource = next((name for name in ids if f"{name}/" in pattern), None)
    value = str(ids[resource]) if resource else "1"
    path = _GROUP.sub(value, pattern).replace("^", "").replace("$", "")
    return "/" + path.replace(".*", "no-such-route/")


def _routes(ids: dict[str, int]) -> list[str]:
    patterns = _walk(get_resolver().url_patterns)
    served = [p for p in patterns if p.startswith("api/") or p in PROBES]
    return sorted({_path(pattern, ids) for pattern in served})


@pytest.mark.parametrize("role", ["anonymous", "user", "staff"])
def test_no_method_on_any_route_is_a_server_error(role):
    owner = UserFactory()
    product = ProductFactory(owner=owner)
    ids = {"users": owner.pk, "products": product.pk, "categories": product.category_id}
    headers = {}
    if role != "anonymous":
        caller = UserFactory(staff=role == "staff")
        headers["HTTP_AUTHORIZATION"] = f"Bearer {AccessToken.for_user(caller)}"
    client = Client(raise_request_exception=False)
    routes = _routes(ids)
    assert len(routes) > 20  # the walk found the routes

    errors, served_unknown = [], []
    for path in routes:
        for method in METHODS:
            response = client.generic(
                method, path, "{}", content_type="application/json", **headers
            )
            if response.status_code >= 500:
                errors.append((method, path, response.status_code))
            # No route serves these: 405 naming what it does serve, unless
            # the caller is refused first (401, 403, 429) or the route is unknown.
            if method in NOT_SERVED and not (
                response.status_code in (401, 403, 404, 429)
                or (response.status_code == 405 and response.has_header("Allow"))
            ):
                served_unknown.append((method, path, response.status_code))

    assert errors == []
    assert served_unknown == []
