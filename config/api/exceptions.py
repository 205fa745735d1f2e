"""JSON errors for the API: the DRF exception handler and the 400/404/500 handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.fields import get_error_detail

from config.validation import ItemErrors

if TYPE_CHECKING:
    from rest_framework.response import Response


class RequestBodyTooLarge(exceptions.APIException):
    """The request body is larger than MAX_REQUEST_BODY_BYTES."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


class BulkValidationError(exceptions.ValidationError):
    """Reject a whole bulk request: ``{"detail", "errors": [{index, errors}]}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        detail = f"{len(errors)} item(s) rejected; nothing was written."
        super().__init__(detail=detail)
        # Set after the fact: DRF would turn every leaf, the integer indexes
        # included, into strings.
        self.detail = {"detail": detail, "errors": errors}  # type: ignore[assignment]
        self.errors = errors


class Conflict(exceptions.APIException):
    """A write collided with a concurrent one on a database constraint."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current data; retry it."
    default_code = "conflict"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Return DRF's error response, also for service, validation and size errors."""
    if isinstance(exc, ItemErrors):
        exc = (
            BulkValidationError(exc.errors)
            if exc.errors
            else exceptions.ValidationError({"detail": exc.detail})
        )
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=get_error_detail(exc))
    elif isinstance(exc, RequestDataTooBig):
        exc = RequestBodyTooLarge()
    elif isinstance(exc, IntegrityError):
        # A constraint caught what the checks before it could not (a race).
        exc = Conflict()
    elif isinstance(exc, DataError):
        exc = exceptions.ValidationError(
            {"detail": "A value is out of range for its field."}
        )
    # Imported here: rest_framework.views reads DEFAULT_PARSER_CLASSES at import
    # time, and the parser module imports this one.
    from rest_framework.views import exception_handler as drf_exception_handler

    return drf_exception_handler(exc, context)


def is_api_request(request: HttpRequest) -> bool:
    """Return True if *request* targets the API prefix (which always answers JSON)."""
    prefix = settings.API_PREFIX.rstrip("/") + "/"
    return request.path.startswith(prefix) or request.path.startswith("/api/")


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Answer an unhandled error with JSON under the API prefix, HTML elsewhere."""
    if is_api_request(request):
        return JsonResponse(
            {"detail": "Internal server error."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    return defaults.server_error(request, *args, **kwargs)


def bad_request(
    request: HttpRequest, exception: Exception, *args: Any, **kwargs: Any
) -> HttpResponse:
    """Answer a rejected request (e.g. an oversized body) with JSON under the API."""
    if is_api_request(request):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(
                {"detail": RequestBodyTooLarge.default_detail},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        return JsonResponse(
            {"detail": "Bad request."}, status=status.HTTP_400_BAD_REQUEST
        )
    return defaults.bad_request(request, exception, *args, **kwargs)


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Answer an unknown path under the API prefix with a JSON 404."""
    detail = "Not found."
    if not request.path.endswith("/"):
        # The catch-all route shadows APPEND_SLASH's redirect; say what to use.
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not not_found:
            detail = f"Not found. Did you mean {request.path}/ ?"
    return JsonResponse({"detail": detail}, status=status.HTTP_404_NOT_FOUND)
