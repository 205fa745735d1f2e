"""Admin template tags that stay fast on tables of millions of rows."""

from __future__ import annotations

import calendar
import datetime
from typing import Any

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.contrib.admin.views.main import ChangeList
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext as _

register = template.Library()


def fast_date_hierarchy(cl: ChangeList) -> dict[str, Any] | None:
    """Return Django's date-hierarchy context without a DISTINCT scan of the table.

    Django lists the periods that have rows with SELECT DISTINCT date_trunc(...)
    over the filtered rows: a full scan of a big table on every page. Here the
    periods come from the calendar between the column's first and last values,
    two index lookups, so a listed period may hold no rows.
    """
    field = cl.date_hierarchy
    year = cl.params.get(f"{field}__year")
    month = cl.params.get(f"{field}__month")
    day = cl.params.get(f"{field}__day")
    if year and month and day:
        return date_hierarchy(cl)  # this level runs no query

    bounds = cl.model._default_manager.aggregate(first=Min(field), last=Max(field))
    if bounds["first"] is None:
        return None
    first, last = (
        timezone.localtime(v) if timezone.is_aware(v) else v for v in bounds.values()
    )

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    if year and month:
        year_n, month_n = int(year), int(month)
        days = range(1, calendar.monthrange(year_n, month_n)[1] + 1)
        return {
            "show": True,
            "back": {"link": link({f"{field}__year": year}), "title": str(year)},
            "choices": [
                {
                    "link": link(
                        {
                            f"{field}__year": year,
                            f"{field}__month": month,
                            f"{field}__day": d,
                        }
                    ),
                    "title": capfirst(
                        formats.date_format(
                            datetime.date(year_n, month_n, d), "MONTH_DAY_FORMAT"
                        )
                    ),
                }
                for d in days
            ],
        }
    if year:
        year_n = int(year)
        months = range(
            first.month if year_n == first.year else 1,
            (last.month if year_n == last.year else 12) + 1,
        )
        return {
            "show": True,
            "back": {"link": link({}), "title": _("All dates")},
            "choices": [
                {
                    "link": link({f"{field}__year": year, f"{field}__month": m}),
                    "title": capfirst(
                        formats.date_format(
                            datetime.date(year_n, m, 1), "YEAR_MONTH_FORMAT"
                        )
                    ),
                }
                for m in months
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({f"{field}__year": str(y)}), "title": str(y)}
            for y in range(first.year, last.year + 1)
        ],
    }


@register.tag(name="fast_date_hierarchy")
def fast_date_hierarchy_tag(parser: template.base.Parser, token: template.base.Token):
    """Render the admin date hierarchy from calendar periods."""
    return InclusionAdminNode(
        parser,
        token,
        func=fast_date_hierarchy,
        template_name="date_hierarchy.html",
        takes_context=False,
    )
