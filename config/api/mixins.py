"""ViewSet helpers: ETag / If-Match optimistic concurrency and bulk payload checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils.http import parse_etags
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

IF_MATCH_DESCRIPTION = (
    "Optional. The `ETag` of the representation you last read; if the object has "
    "changed since, the write is refused with 412 and nothing changes."
)


class PreconditionFailed(APIException):
    """The If-Match header names a representation that is no longer current."""

    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = (
        "The object has changed since you read it (If-Match does not match its "
        "ETag). Fetch it again and retry."
    )
    default_code = "precondition_failed"


def compute_etag(data: Any) -> str:
    """Return a strong ETag for a representation (its canonical JSON, hashed)."""
    body = json.dumps(data, cls=JSONEncoder, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.blake2b(body.encode(), digest_size=16).hexdigest() + '"'


def etag_matches(header: str, etag: str, *, weak: bool = False) -> bool:
    """Return True if an If-Match / If-None-Match *header* names *etag* or is ``*``.

    If-Match compares strongly (a ``W/`` tag never matches); If-None-Match
    compares weakly (``weak=True``), as RFC 9110 says.
    """
    tags = parse_etags(header)
    if weak:
        tags = [tag.removeprefix("W/") for tag in tags]
    return "*" in tags or etag in tags


class ETagMixin:
    """Detail views with a strong ETag; writes honour If-Match (412 when stale).

    A write locks the row (SELECT ... FOR UPDATE) before comparing ETags, so a
    concurrent write cannot slip in between the check and the update, and two
    writers of one row are serialised rather than one overwriting the other.
    Views override ``representation`` when the read shape differs from the
    serializer used for writes.
    """

    _lock_rows = False

    def representation(self, instance: models.Model) -> Any:
        """Return the read representation of *instance* (what GET returns)."""
        return self.get_serializer(instance).data

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        if not getattr(self, "detail", False):
            # List filters select among many objects; DRF also runs them on
            # one object by id, where a FilterSet built per request cost more
            # than the query itself.
            queryset = super().filter_queryset(queryset)
        if self._lock_rows:
            queryset = queryset.select_for_update(of=("self",))
        return queryset

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Run the block in a transaction in which get_object() locks the row."""
        with transaction.atomic():
            self._lock_rows = True
            try:
                yield
            finally:
                self._lock_rows = False

    def check_if_match(self, request: Request, instance: models.Model) -> None:
        """Raise PreconditionFailed if If-Match is sent and names another version."""
        header = request.headers.get("If-Match")
        if header and not etag_matches(
            header, compute_etag(self.representation(instance))
        ):
            raise PreconditionFailed()

    def retrieve_representation(self) -> Any:
        """Return the representation GET answers (404 if there is nothing to show)."""
        return self.representation(self.get_object())

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self.retrieve_representation()
        etag = compute_etag(data)
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and etag_matches(if_none_match, etag, weak=True):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(data, headers={"ETag": etag})

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        partial = kwargs.pop("partial", False)
        with self.locked():
            instance = self.get_object()
            self.check_if_match(request, instance)
            serializer = self.get_serializer(
                instance, data=request.data, partial=partial
            )
            serializer.is_valid(raise_exception=True)
            self.perform_update(serializer)
            data = self.representation(serializer.instance)
        return Response(data, headers={"ETag": compute_etag(data)})

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with self.locked():
            instance = self.get_object()
            self.check_if_match(request, instance)
            self.perform_destroy(instance)
        return Response(status=status.HTTP_204_NO_CONTENT)


def bulk_items(data: Any, *, key: str | None = None) -> list[Any]:
    """Return the items of a bulk payload, or raise 400 for a bad envelope.

    The payload is a bare JSON array, or an object holding the array under
    *key*; it must hold between 1 and ``BULK_MAX_ITEMS`` items.
    """
    limit = settings.BULK_MAX_ITEMS
    if key is not None:
        if not isinstance(data, Mapping) or key not in data:
            raise ValidationError(
                {
                    "detail": f"The body must be a JSON object with `{key}`.",
                    key: ["This field is required."],
                }
            )
        data = data[key]
        where = f"`{key}`"
    else:
        where = "The body"
    if not isinstance(data, list):
        raise ValidationError(
            {"detail": f"{where} must be a JSON array of items, not {_kind(data)}."}
        )
    if not data:
        raise ValidationError({"detail": f"{where} must hold at least one item."})
    if len(data) > limit:
        raise ValidationError(
            {"detail": f"{where} holds {len(data)} items; at most {limit} are allowed."}
        )
    return data


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
