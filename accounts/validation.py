"""One place for the rules of a user payload, shared by the API, bulk and imports.

Pure Python: no database query and no hashing, so it can run for every row of a
bulk request or an import file. Uniqueness (which needs the database) is checked
by the callers in one query per batch.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from accounts.models import User
from config.validation import (
    MSG_BLANK,
    MSG_NULL_CHARACTERS,
    MSG_REQUIRED,
    MSG_STRING,
    max_length_message,
)

EMAIL_MAX_LENGTH = User._meta.get_field("email").max_length
USERNAME_MAX_LENGTH = User._meta.get_field("username").max_length
# Plain text before hashing (the stored hash is short): long enough for any
# passphrase, short enough that hashing it costs nothing extra.
PASSWORD_MAX_LENGTH = 4096
MSG_EMAIL = "Enter a valid email address."
# What an import file gives of a user (is_staff and is_superuser never).
USER_IMPORT_FIELDS = ("email", "username", "password", "is_active")

_username_validator = UnicodeUsernameValidator()
# Characters a username may not hold (the complement of UnicodeUsernameValidator).
_USERNAME_DISALLOWED = re.compile(r"[^\w.@+-]")


def normalize_email(value: str) -> str:
    """Return *value* trimmed, with its domain part lower-cased (as Django does)."""
    value = value.strip()
    local, sep, domain = value.rpartition("@")
    if not sep:
        return value
    return f"{local}@{domain.lower()}"


def username_from_email(email: str) -> str:
    """Return a valid username derived from the local part of *email*."""
    local = email.rpartition("@")[0] or email
    username = _USERNAME_DISALLOWED.sub("", unicodedata.normalize("NFKC", local))
    return username[:USERNAME_MAX_LENGTH] or "user"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _messages(exc: ValidationError) -> list[str]:
    return [str(message) for message in exc.messages]


def _clean_email(value: Any) -> tuple[str | None, list[str]]:
    if not isinstance(value, str):
        return None, [MSG_STRING]
    email = normalize_email(value)
    if not email:
        return None, [MSG_BLANK]
    if len(email) > EMAIL_MAX_LENGTH:
        return None, [max_length_message(EMAIL_MAX_LENGTH)]
    try:
        validate_email(email)
    except ValidationError:
        return None, [MSG_EMAIL]
    return email, []


def _clean_username(value: Any) -> tuple[str | None, list[str]]:
    if not isinstance(value, str):
        return None, [MSG_STRING]
    username = value.strip()
    if not username:
        return None, [MSG_BLANK]
    if len(username) > USERNAME_MAX_LENGTH:
        return None, [max_length_message(USERNAME_MAX_LENGTH)]
    try:
        _username_validator(username)
    except ValidationError as exc:
        return None, _messages(exc)
    return username, []


def _clean_password(
    value: Any, *, email: str | None, username: str | None
) -> tuple[str | None, list[str]]:
    if not isinstance(value, str):
        return None, [MSG_STRING]
    if len(value) > PASSWORD_MAX_LENGTH:
        return None, [max_length_message(PASSWORD_MAX_LENGTH)]
    if "\x00" in value:
        return None, [MSG_NULL_CHARACTERS]
    # The similarity validator reads attributes and field names off a user; an
    # unsaved instance gives it both without touching the database.
    context = User(email=email or "", username=username or "")
    try:
        password_validation.validate_password(value, user=context)
    except ValidationError as exc:
        return None, _messages(exc)
    return value, []


def clean_user(
    data: Mapping[str, Any],
    *,
    partial: bool = False,
    current: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Return (cleaned values, field errors) for one user payload.

    Only ``email``, ``username`` and ``password`` are read; any other key
    (``is_staff``, ``id``...) is ignored. On create (``partial=False``) the email
    is required and a missing username is derived from its local part; a
    ``password`` that is absent, ``None`` or empty is left out. With
    ``partial=True`` only the keys present are checked. *current* supplies the
    stored email and username that a new password must not resemble.
    """
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    current = current or {}

    if "email" in data and data["email"] is not None:
        email, problems = _clean_email(data["email"])
        if problems:
            errors["email"] = problems
        else:
            cleaned["email"] = email
    elif "email" in data or not partial:
        errors["email"] = [MSG_REQUIRED]

    username_given = data.get("username") not in (None, "")
    if username_given:
        username, problems = _clean_username(data["username"])
        if problems:
            errors["username"] = problems
        else:
            cleaned["username"] = username
    elif not partial and "email" in cleaned:
        cleaned["username"] = username_from_email(cleaned["email"])
    elif partial and "username" in data:
        errors["username"] = [MSG_BLANK]

    password = data.get("password")
    if password not in (None, ""):
        value, problems = _clean_password(
            password,
            email=cleaned.get("email") or _text(current.get("email")),
            username=cleaned.get("username") or _text(current.get("username")),
        )
        if problems:
            errors["password"] = problems
        else:
            cleaned["password"] = value

    return cleaned, errors
