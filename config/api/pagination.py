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
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from django.core.exceptions import EmptyResultSet
from django.db import connections, router
from django.db.models import Model, Q, QuerySet
from django.http import HttpResponse
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from config.counting import RowCount, count_rows
from config.lru import LRU


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


# The offset and limit a list's page is compiled with: Django writes them
# into the SQL as literals, which PreparedList turns into parameters.
_COMPILED_OFFSET = 777_777_771
_COMPILED_LIMIT = 888_888_883
_PLACEHOLDER = re.compile(r"%%|%s")


@dataclass(frozen=True)
class PreparedList:
    """A list's page and count SQL, compiled once: only LIMIT and OFFSET vary.

    Building and compiling a page's QuerySets (the page, its deferred join,
    the count) cost several times the CPU of running them; a list's SQL
    depends on its filters and audience only, so it is compiled once per
    such key (``paginate_prepared``), as ``ProductQuerySet.api_row`` does
    for one product.
    """

    model: type[Model]
    page_sql: str  # with "LIMIT %s OFFSET %s" where the page's slice was
    page_params: tuple[Any, ...]
    slice_at: int  # the index in page_params where LIMIT and OFFSET go
    count: RowCount

    @classmethod
    def compile(
        cls, queryset: QuerySet, page_rows: Callable[[QuerySet], QuerySet]
    ) -> PreparedList | None:
        """Compile *queryset*'s page (read by *page_rows*) and count; None if unfit.

        Lists ordered by expressions (a search) are not compiled: their
        page SQL selects more than the page's values.
        """
        if queryset.query.annotations:
            return None
        page = page_rows(
            queryset[_COMPILED_OFFSET : _COMPILED_OFFSET + _COMPILED_LIMIT]
        )
        try:
            sql, params = page.query.sql_with_params()
            count = RowCount.of(queryset)
        except EmptyResultSet:
            return None  # no row can match: the QuerySet path answers that

        marker = f"LIMIT {_COMPILED_LIMIT} OFFSET {_COMPILED_OFFSET}"
        if sql.count(marker) != 1:
            return None
        head, tail = sql.split(marker)
        slice_at = sum(1 for m in _PLACEHOLDER.findall(head) if m == "%s")
        return cls(
            model=queryset.model,
            page_sql=f"{head}LIMIT %s OFFSET %s{tail}",
            page_params=tuple(params),
            slice_at=slice_at,
            count=count,
        )

    def page(self, limit: int, offset: int, using: str) -> tuple[list[tuple], int]:
        """Return the rows of the page of *limit* rows from *offset*, and its count.

        Both statements go in one round trip (psycopg binds parameters on
        the client, and a simple query may hold several statements); the
        count is ``RowCount.settle``d from its first step.
        """
        count_sql, count_params = self.count.first_step()
        params = (
            *self.page_params[: self.slice_at],
            limit,
            offset,
            *self.page_params[self.slice_at :],
        )
        connection = connections[using]
        with connection.cursor() as cursor:
            if connection.settings_dict["OPTIONS"].get("server_side_binding"):
                # Server-side binding takes one statement at a time.
                cursor.execute(self.page_sql, params)
                rows = cursor.fetchall()
                cursor.execute(count_sql, count_params)
            else:
                cursor.execute(f"{self.page_sql}; {count_sql}", params + count_params)
                rows = cursor.fetchall()
                cursor.nextset()
            first = cursor.fetchone()[0]
        return rows, self.count.settle(first, using)


# The PreparedLists of this process, by list key.
_prepared_lists: LRU[Hashable, PreparedList] = LRU(maxsize=512)


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
        if not self._read_page(request):
            return None
        page = queryset[self.offset : self.offset + self.limit + 1]
        # A view may read the page's columns in a second step (page_rows): the
        # skipped rows are then walked on an index alone, without their joins.
        page_rows = getattr(view, "page_rows", None)
        rows = list(page if page_rows is None else page_rows(page))
        return self._finish(rows, lambda: self.get_count(queryset))

    def paginate_prepared(
        self,
        key: Hashable,
        build: Callable[[], QuerySet],
        request: Request,
        view: Any,
        page_rows: Callable[[QuerySet], QuerySet] | None = None,
    ) -> list | None:
        """Paginate the QuerySet *build* returns, compiled once per *key*.

        *key* names everything the list's SQL depends on (who asks, which
        filters, and *page_rows*): the SQL compiled for it is kept
        (``PreparedList``) and later requests run it with their own LIMIT and
        OFFSET, without building or compiling a QuerySet. *page_rows* (by
        default the view's) reads a page's rows and must return a
        ``values_list`` (rows are read as the database returns them).
        """
        if not self._read_page(request):
            return None
        prepared = _prepared_lists.get(key)
        if prepared is None:
            queryset = build()
            prepared = PreparedList.compile(queryset, page_rows or view.page_rows)
            if prepared is None:
                return self.paginate_queryset(queryset, request, view)
            _prepared_lists.put(key, prepared)
        rows, count = prepared.page(
            self.limit + 1, self.offset, router.db_for_read(prepared.model)
        )
        return self._finish(rows, lambda: count)

    def get_paginated_json(
        self, items: list[bytes], renderer: JSONRenderer
    ) -> HttpResponse:
        """Return the page of *items*, already rendered by *renderer*, as its answer.

        The same bytes as ``get_paginated_response`` rendered by *renderer*:
        the envelope is rendered around an empty list and the items go in it.
        """
        envelope = renderer.render(
            {
                "count": self.count,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": [],
            }
        )
        if not envelope.endswith(b"[]}"):
            raise ValueError("results must come last in the page's envelope")
        body = b"".join((envelope[:-3], b"[", b",".join(items), b"]}"))
        return HttpResponse(body, content_type=renderer.media_type)

    def _read_page(self, request: Request) -> bool:
        """Read limit and offset (400 beyond max_offset); False: not paginated."""
        self.request = request
        self.limit = self.get_limit(request)
        if self.limit is None:
            return False
        self.offset = self.get_offset(request)
        if self.offset > self.max_offset:
            message = f"Offsets above {self.max_offset} are not served."
            raise ValidationError(
                {self.offset_query_param: [message + self.deep_paging_hint]}
            )
        return True

    def _finish(self, rows: list, count: Callable[[], int]) -> list:
        """Return the page of *rows* (read one past it); set has_more and count."""
        self.has_more = len(rows) > self.limit
        rows = rows[: self.limit]
        seen = self.offset + len(rows)
        total = count()
        if self.has_more:
            self.count = max(total, seen + 1)
        elif rows or not self.offset:
            self.count = seen
        else:
            self.count = total
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

    def paginate_prepared(
        self,
        key: Hashable,
        build: Callable[[], QuerySet],
        request: Request,
        view: Any,
        page_rows: Callable[[QuerySet], QuerySet] | None = None,
    ) -> list | None:
        """Offset pages of a list compiled once per *key* (LimitOffsetPagination's)."""
        return self.offset.paginate_prepared(key, build, request, view, page_rows)

    def get_paginated_json(
        self, items: list[bytes], renderer: JSONRenderer
    ) -> HttpResponse:
        """The offset page of rendered *items* (LimitOffsetPagination's)."""
        return self.offset.get_paginated_json(items, renderer)

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
