"""Every operation of the OpenAPI schema answers as the schema says (schemathesis).

The schema is the one /api/schema/ serves; the app runs in-process over WSGI
inside the test's transaction. Each case signs in as a fresh throwaway staff
member or user (a real JWT), so a fuzzed write to that account (deactivation,
a new email) never touches an account another case uses. Half of the drawn
ids are mapped to objects that exist, so detail routes answer more than 404.
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.factories import ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Bounded and seeded: the same cases on every run, about a minute and a half
# here for every operation as staff and as a user.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 13,
        "generation": {"max-examples": 20, "deterministic": True, "database": "none"},
        "phases": {"coverage": {"enabled": False}},
    }
)


def _load_schema() -> Any:
    """Return the schema /api/schema/ serves, bound to the WSGI app."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    loaded = schemathesis.openapi.from_dict(
        json.loads(OpenApiJsonRenderer().render(document)), config=CONFIG
    )
    loaded.app = application
    return loaded


schema = _load_schema()

# Objects of the current test that drawn ids may be mapped to, by resource.
_existing: dict[str, list[int]] = {}


@pytest.fixture(autouse=True)
def _world(settings) -> Iterator[None]:
    """Create objects to find; keep the app's requests in the test's transaction."""
    settings.ALLOWED_HOSTS = ["localhost"]  # the Host schemathesis' WSGI client sends
    other = UserFactory()
    product = ProductFactory(owner=other)
    _existing.update(
        users=[other.pk], products=[product.pk], categories=[product.category_id]
    )
    # As Django's test client does: the handler would otherwise close the
    # connection, and the test's transaction with it, after each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    _existing.clear()


def _aim_at_existing(case: Any, caller_ids: dict[str, int]) -> None:
    """Point an even drawn ``id`` at an existing object (the caller's own or not)."""
    drawn = (case.path_parameters or {}).get("id")
    if not isinstance(drawn, int) or drawn % 2:
        return
    resource = case.path.strip("/").split("/")[-2]
    candidates = [*_existing.get(resource, []), caller_ids.get(resource)]
    candidates = [pk for pk in candidates if pk is not None]
    case.path_parameters["id"] = candidates[drawn // 2 % len(candidates)]


@pytest.mark.parametrize("role", ["staff", "user"])
@schema.parametrize()
def test_every_operation_answers_as_declared(case, role):
    caller = UserFactory(staff=role == "staff")
    own_product = ProductFactory(owner=caller)
    _aim_at_existing(case, {"users": caller.pk, "products": own_product.pk})
    token = AccessToken.for_user(caller)
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
