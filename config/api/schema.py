"""OpenAPI operations that declare the errors DRF answers, once for every view."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.plumbing import ComponentRegistry
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse

from config.api.serializers import ErrorSerializer

STANDARD_ERRORS = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="Invalid input: `{field: [messages]}`, or `{detail}` for a bad "
        "body or envelope. Nothing changed.",
    ),
    401: OpenApiResponse(
        ErrorSerializer, description="Missing, invalid or expired credentials."
    ),
    403: OpenApiResponse(
        ErrorSerializer, description="Signed in, but not allowed to do this."
    ),
    404: OpenApiResponse(ErrorSerializer, description="No such object."),
    412: OpenApiResponse(
        ErrorSerializer,
        description="If-Match names an older version; nothing changed.",
    ),
    413: OpenApiResponse(ErrorSerializer, description="Request body too large."),
    415: OpenApiResponse(
        ErrorSerializer, description="Unsupported Content-Type; send JSON."
    ),
    429: OpenApiResponse(
        ErrorSerializer,
        description="Throttled; see the Retry-After and RateLimit headers.",
    ),
}

# Who a permission is asked about when deciding whether 403 can happen: a
# signed-in caller without staff rights, and an object that is not theirs.
_CALLER = SimpleNamespace(
    is_authenticated=True, is_staff=False, is_superuser=False, pk=0, id=0
)
_OTHERS_OBJECT = SimpleNamespace(pk=-1, id=-1, owner_id=-1)


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers each operation can give.

    What an operation can answer follows from what it is, so no view lists
    them by hand: 400 when it takes a body or query parameters, 401 when it
    reads a bearer token, 403 when a permission can refuse a signed-in caller,
    404 on a path with parameters, 412 with If-Match, 413 and 415 with a body,
    429 when throttled. A response a view declares itself wins.
    """

    def get_operation(
        self,
        path: str,
        path_regex: str,
        path_prefix: str,
        method: str,
        registry: ComponentRegistry,
    ) -> dict[str, Any] | None:
        operation = super().get_operation(
            path, path_regex, path_prefix, method, registry
        )
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self.error_codes(operation):
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(
                    STANDARD_ERRORS[code], str(code)
                )
        return operation

    def _get_request_body(self, direction: str = "request") -> dict[str, Any] | None:
        # drf-spectacular documents bodies for POST, PUT and PATCH only; a
        # DELETE that declares its own request (bulk delete) takes one too.
        if self.method != "DELETE":
            return super()._get_request_body(direction)
        declared = self.get_request_serializer()
        if declared is None or type(declared) is type(self._get_serializer()):
            return None
        self.method = "POST"
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        # Read-only fields are required in responses, except those a
        # representation may leave out (Meta.optional_fields).
        schema = super()._map_basic_serializer(serializer, direction)
        optional = getattr(getattr(serializer, "Meta", None), "optional_fields", ())
        if optional and "required" in schema:
            schema["required"] = [f for f in schema["required"] if f not in optional]
            if not schema["required"]:
                del schema["required"]
        return schema

    def error_codes(self, operation: dict[str, Any]) -> list[int]:
        """Return the error status codes *operation* can answer."""
        places = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        has_body = "requestBody" in operation
        codes = []
        if has_body or any(place == "query" for place, _ in places):
            codes.append(400)
        if self.view.get_authenticators():
            codes.append(401)
        if self.may_refuse():
            codes.append(403)
        if any(place == "path" for place, _ in places):
            codes.append(404)
        if ("header", "If-Match") in places:
            codes.append(412)
        if has_body:
            codes += [413, 415]
        if self.view.get_throttles():
            codes.append(429)
        return codes

    def may_refuse(self) -> bool:
        """Return True if a permission of the view can refuse a signed-in caller."""
        request = SimpleNamespace(method=self.method, user=_CALLER)
        on_object = "{" in self.path
        for permission in self.view.get_permissions():
            try:
                if not permission.has_permission(request, self.view):
                    return True
                if on_object and not permission.has_object_permission(
                    request, self.view, _OTHERS_OBJECT
                ):
                    return True
            except Exception:  # noqa: BLE001 - a rule it cannot probe may refuse
                return True
        return False
