"""Pagination that stays fast on big tables: cheap counts and keyset cursors.

Counts follow ``config.counting.count_rows``: exact up to a thousand matches,
beyond that PostgreSQL's estimate, so no request runs a COUNT(*) over
millions of rows.

Cursors: ``?cursor=`` switches a list to keyset paging on its ordering (the
last ordering term must be unique, e.g. ``id``), which stays fast at any depth
and neither repeats nor skips rows while others are inserted.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django.db.models import Q, QuerySet
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from config.counting import count_rows


def query_int(request: Request, name: str, *, default: int, minimum: int) -> int:
    """Return the whole-number query parameter *name*; 400 if sent and not one.

    Digits only (no sign, spaces or underscores, which int() would take);
    more than 18 of them read as 10**18, beyond any limit or offset served.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw[:19]) < minimum:
        raise ValidationError(
            {name: [f"Expected a whole number of at least {minimum}."]}
        )
    return int(raw) if len(raw) <= 18 else 10**18


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """Limit/offset pages: 20 items by default, 100 at most, cheap counts.

    ``next`` comes from reading one row past the page, not from the count, so
    paging reaches the last row even where the count is an estimate; the
    count is corrected by what the page saw (exact on the last page). The
    count query runs on every page, so query counts stay constant.
    """

    default_limit = 20
    max_limit = 100
    # PostgreSQL reads and discards every skipped row, so deep offsets cost
    # in proportion to their depth; keyset cursors page any depth.
    max_offset = 10_000
    deep_paging_hint = ""

    def paginate_queryset(
        self, queryset: QuerySet | list, request: Request, view: Any = None
    ) -> list | None:
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return None
        self.offset = self.get_offset(request)
        if self.offset > self.max_offset:
            message = f"Offsets above {self.max_offset} are not served."
            raise ValidationError(
                {self.offset_query_param: [message + self.deep_paging_hint]}
            )
        page = queryset[self.offset : self.offset + self.limit + 1]
        # A view may read the page's columns in a second step (page_rows): the
        # skipped rows are then walked on an index alone, without their joins.
        page_rows = getattr(view, "page_rows", None)
        rows = list(page if page_rows is None else page_rows(page))
        self.has_more = len(rows) > self.limit
        rows = rows[: self.limit]
        seen = self.offset + len(rows)
        count = self.get_count(queryset)
        if self.has_more:
            self.count = max(count, seen + 1)
        elif rows or not self.offset:
            self.count = seen
        else:
            self.count = count
        return rows

    def get_limit(self, request: Request) -> int:
        limit = query_int(
            request, self.limit_query_param, default=self.default_limit, minimum=1
        )
        return min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        return query_int(request, self.offset_query_param, default=0, minimum=0)

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0, "maximum": self.max_offset},
        }
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters

    def get_count(self, queryset: QuerySet | list) -> int:
        if isinstance(queryset, QuerySet):
            return count_rows(queryset)
        return len(queryset)

    def get_next_link(self) -> str | None:
        if not self.has_more:
            return None
        return self._link(self.offset + self.limit)

    def get_previous_link(self) -> str | None:
        if self.offset <= 0:
            return None
        return self._link(max(self.offset - self.limit, 0))

    def _link(self, offset: int) -> str:
        """Return this page's URL with ``limit`` and *offset* (none when 0) set.

        What DRF's links are (its replace_query_param and remove_query_param,
        query sorted by name), parsing the URL once rather than per parameter.
        """
        scheme, netloc, path, query, fragment = urlsplit(
            self.request.build_absolute_uri()
        )
        params = parse_qs(query, keep_blank_values=True)
        params[self.limit_query_param] = [str(self.limit)]
        if offset:
            params[self.offset_query_param] = [str(offset)]
        else:
            params.pop(self.offset_query_param, None)
        query = urlencode(sorted(params.items()), doseq=True)
        return urlunsplit((scheme, netloc, path, query, fragment))


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


class KeysetCursorPagination(pagination.BasePagination):
    """Cursor pages keyed on the queryset's ordering, with ``limit`` as page size.

    The cursor holds the ordering values of the row at the page edge, so the
    next page is ``WHERE (ordering) > (edge) LIMIT n``: an index range scan
    whatever the depth, and stable while rows are inserted or deleted.
    """

    cursor_query_param = "cursor"
    cursor_query_description = (
        "Keyset cursor. Send it empty to start cursor paging; then follow "
        "`next` / `previous`."
    )
    limit_query_param = "limit"
    default_limit = 20
    max_limit = 100
    invalid_cursor_message = "Invalid cursor."

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list:
        self.request = request
        self.base_url = remove_query_param(
            request.build_absolute_uri(), LimitOffsetPagination.offset_query_param
        )
        self.limit = self._limit(request)
        self.ordering = [str(term) for term in queryset.query.order_by]
        if not self.ordering:
            raise ValueError("Cursor paging needs an ordered queryset.")
        values, reverse = self._decode(
            request.query_params.get(self.cursor_query_param)
        )

        if values is not None:
            queryset = queryset.filter(self._after(values, reverse))
        if reverse:
            queryset = queryset.order_by(*(self._flip(term) for term in self.ordering))
        rows = list(queryset[: self.limit + 1])
        has_more = len(rows) > self.limit
        rows = rows[: self.limit]
        if reverse:
            rows.reverse()
            self.has_next, self.has_previous = values is not None, has_more
        else:
            self.has_next, self.has_previous = has_more, values is not None
        self.page = rows
        return rows

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            OrderedDict(
                [
                    ("next", self.get_next_link()),
                    ("previous", self.get_previous_link()),
                    ("results", data),
                ]
            )
        )

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        return self._link(self.page[-1], reverse=False)

    def get_previous_link(self) -> str | None:
        if not self.has_previous or not self.page:
            return None
        return self._link(self.page[0], reverse=True)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": self.cursor_query_description,
                "schema": {"type": "string"},
            }
        ]

    def _limit(self, request: Request) -> int:
        limit = query_int(
            request, self.limit_query_param, default=self.default_limit, minimum=1
        )
        return min(limit, self.max_limit)

    @staticmethod
    def _flip(term: str) -> str:
        return term[1:] if term.startswith("-") else f"-{term}"

    def _signature(self) -> str:
        return ",".join(self.ordering)

    def _link(self, row: Any, *, reverse: bool) -> str:
        values = [_encode_value(getattr(row, t.lstrip("-"))) for t in self.ordering]
        payload = {"o": self._signature(), "v": values, "r": reverse}
        token = base64.urlsafe_b64encode(
            json.dumps(payload, separators=(",", ":")).encode()
        ).decode()
        return replace_query_param(self.base_url, self.cursor_query_param, token)

    def _decode(self, token: str | None) -> tuple[list | None, bool]:
        if not token:
            return None, False
        try:
            payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
            values, reverse, signature = payload["v"], payload["r"], payload["o"]
        except (ValueError, TypeError, KeyError, UnicodeError, binascii.Error):
            raise ValidationError(
                {self.cursor_query_param: [self.invalid_cursor_message]}
            ) from None
        if (
            signature != self._signature()
            or not isinstance(values, list)
            or len(values) != len(self.ordering)
            or not isinstance(reverse, bool)
            or not all(isinstance(v, str | int | float | bool) for v in values)
        ):
            raise ValidationError(
                {self.cursor_query_param: [self.invalid_cursor_message]}
            )
        return values, reverse

    def _after(self, values: list, reverse: bool) -> Q:
        """Return the filter for rows strictly past *values* in paging direction."""
        terms = []
        for term, value in zip(self.ordering, values, strict=True):
            descending = term.startswith("-") != reverse
            terms.append((term.lstrip("-"), descending, value))
        # Lexicographic "greater than", plus a redundant bound on the first
        # column so that PostgreSQL can start the index scan at the edge.
        condition = Q()
        equal = Q()
        for field, descending, value in terms:
            condition |= equal & Q(
                **{f"{field}__{'lt' if descending else 'gt'}": value}
            )
            equal &= Q(**{field: value})
        field, descending, value = terms[0]
        bound = Q(**{f"{field}__{'lte' if descending else 'gte'}": value})
        return bound & condition


class LimitOffsetOrCursorPagination(pagination.BasePagination):
    """Limit/offset pages with a count; keyset cursor pages when ``cursor`` is sent."""

    def __init__(self) -> None:
        self.offset = LimitOffsetPagination()
        self.offset.deep_paging_hint = (
            " Page deeper with keyset cursors: send cursor= (empty)."
        )
        self.cursor = KeysetCursorPagination()
        self.active: pagination.BasePagination = self.offset

    def paginate_queryset(
        self, queryset: QuerySet, request: Request, view: Any = None
    ) -> list | None:
        if self.cursor.cursor_query_param in request.query_params:
            self.active = self.cursor
        return self.active.paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data: Any) -> Response:
        return self.active.get_paginated_response(data)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        page = self.offset.get_paginated_response_schema(schema)
        page["required"] = ["results"]
        page["description"] = "Cursor pages (`?cursor=`) carry no `count`."
        return page

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        return [
            *self.offset.get_schema_operation_parameters(view),
            *self.cursor.get_schema_operation_parameters(view),
        ]
