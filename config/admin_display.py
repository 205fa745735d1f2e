"""Compact changelist cells: shortened text and dates that fit one line."""

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

# Linked from the ModelAdmins' Media (served by WhiteNoise like the admin's own).
CHANGELIST_CSS = "config/admin-changelist.css"


def shortened(text: str, length: int) -> str | SafeString:
    """Return *text* cut to *length* characters, the full text as a tooltip."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: length - 1])


def compact_datetime(value: datetime | None) -> str:
    """Return *value* in the current time zone as 'YYYY-MM-DD HH:MM'."""
    if value is None:
        return ""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


class CompactChangelistMixin:
    """ModelAdmin mixin: the compact changelist stylesheet and a one-line date."""

    class Media:
        css = {"all": [CHANGELIST_CSS]}

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Any) -> str:
        return compact_datetime(obj.created_at)
