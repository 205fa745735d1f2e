"""Content negotiation that remembers its answers."""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

# Distinct (renderers, Accept, format) combinations remembered per process;
# when full the memo starts over, so a client cannot grow it.
MAX_REMEMBERED = 512
MAX_ACCEPT_LENGTH = 512


class RememberingContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, computed once per renderers, Accept header and format.

    DRF parses the Accept header and builds the query dict on every request,
    a visible share of a cached read. Its answer depends only on the view's
    renderers (class, media type, format), the Accept header and the
    requested format (a URL suffix or ``?format=``), so it is remembered per
    combination, as the position of the renderer chosen. Failures
    (406, 404 for an unknown format) are not remembered: they run DRF's code
    and raise its exceptions every time.
    """

    _remembered: ClassVar[dict[tuple[Any, ...], tuple[int, str]]] = {}

    def select_renderer(
        self,
        request: Request,
        renderers: list[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        meta = request._request.META
        requested = format_suffix
        # request.GET is built from QUERY_STRING: no query string, no ?format=.
        if not requested and meta.get("QUERY_STRING"):
            requested = request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        accept = meta.get("HTTP_ACCEPT", "*/*")
        key = (
            tuple((type(r), r.media_type, r.format) for r in renderers),
            accept,
            requested,
        )
        known = self._remembered.get(key)
        if known is not None:
            return renderers[known[0]], known[1]
        renderer, media_type = super().select_renderer(
            request, renderers, format_suffix
        )
        if len(accept) <= MAX_ACCEPT_LENGTH:
            for index, candidate in enumerate(renderers):
                if candidate is renderer:
                    if len(self._remembered) >= MAX_REMEMBERED:
                        self._remembered.clear()
                    self._remembered[key] = (index, media_type)
                    break
        return renderer, media_type
