"""What both apps' pure-Python cleaners share: DRF's wording and per-item errors.

A cleaner returns ``(value, error)``; a bulk service gathers the errors of
each item by its position and raises ItemErrors, which the API answers with
400 ``{"detail", "errors": [{index, errors}]}`` (config.api.exceptions).
"""

from __future__ import annotations

from typing import Any

# DRF's field messages, word for word, so a rule reads the same from the
# serializers, the bulk endpoints and the import commands.
MSG_REQUIRED = "This field is required."
MSG_NULL = "This field may not be null."
MSG_BLANK = "This field may not be blank."
MSG_STRING = "Not a valid string."
MSG_NULL_CHARACTERS = "Null characters are not allowed."
MSG_BOOLEAN = "Must be a valid boolean."

_TRUE = frozenset({"true", "1", "yes", "y", "on", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "off", "f"})

FieldErrors = dict[str, list[str]]


def max_length_message(limit: int) -> str:
    """Return DRF's error for a text longer than *limit* characters."""
    return f"Ensure this field has no more than {limit} characters."


def clean_bool(value: Any) -> tuple[bool | None, str | None]:
    """Return (flag, error) for a boolean given as JSON or as text."""
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int) and value in (0, 1):
        return bool(value), None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True, None
        if text in _FALSE:
            return False, None
    return None, MSG_BOOLEAN


class ItemErrors(Exception):
    """Some items of a bulk write are invalid, so nothing was written.

    *errors* lists ``{"index", "errors": {field: [messages]}}`` by position;
    an empty list with a *detail* rejects the request as a whole.
    """

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None):
        super().__init__(detail or f"{len(errors)} invalid item(s)")
        self.errors = errors
        self.detail = detail


class ItemErrorList:
    """Field errors of a bulk payload's items, gathered by item index."""

    def __init__(self) -> None:
        self.by_index: dict[int, FieldErrors] = {}

    def __bool__(self) -> bool:
        return bool(self.by_index)

    def __contains__(self, index: int) -> bool:
        return index in self.by_index

    def add(self, index: int, field: str, message: str) -> None:
        """Add *message* to *field* of item *index*."""
        self.by_index.setdefault(index, {}).setdefault(field, []).append(message)

    def set(self, index: int, errors: FieldErrors) -> None:
        """Record all of item *index*'s field *errors* at once."""
        self.by_index[index] = errors

    def raise_any(self) -> None:
        """Raise ItemErrors if any item has an error."""
        if self.by_index:
            raise ItemErrors(
                [
                    {"index": i, "errors": self.by_index[i]}
                    for i in sorted(self.by_index)
                ]
            )
