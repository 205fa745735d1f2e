from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from django.contrib.auth.hashers import (
    UNUSABLE_PASSWORD_PREFIX,
    check_password,
    make_password,
)
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from rest_framework_simplejwt.exceptions import AuthenticationFailed, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import (
    BlacklistedToken,
    OutstandingToken,
)
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from accounts.invalidation import user_writes
from accounts.models import User
from accounts.tasks import send_password_reset_email, send_welcome_email
from accounts.validation import (
    USER_IMPORT_FIELDS,
    USERNAME_MAX_LENGTH,
    clean_user,
    username_from_email,
)
from config.bulkio import UpsertResult
from config.cache.namespaces import bump_on_commit
from config.metrics import BULK_ROWS_WRITTEN, TASKS_ENQUEUED
from config.upsert import MergeTarget, insert_missing, staged_merge
from config.validation import MSG_REQUIRED, ItemErrorList

logger = logging.getLogger(__name__)

EMAIL_TAKEN = "A user with that email already exists."
USERNAME_TAKEN = "A user with that username already exists."
# Each password costs one deliberately slow hash (docs/api.md gives its cost),
# so a bulk request carries at most this many.
BULK_MAX_PASSWORDS = 10


def user_tokens_revoke(*, user_ids: list[int]) -> int:
    """Blacklist every outstanding refresh token of the given users."""
    outstanding = OutstandingToken.objects.filter(
        user_id__in=user_ids, blacklistedtoken__isnull=True
    ).values_list("pk", flat=True)
    tokens = [BlacklistedToken(token_id=pk) for pk in outstanding]
    BlacklistedToken.objects.bulk_create(tokens, ignore_conflicts=True)
    return len(tokens)


@transaction.atomic
def users_set_active(*, users: QuerySet[User], active: bool) -> int:
    """Activate or deactivate *users*; deactivation revokes their refresh tokens."""
    ids = list(users.exclude(is_active=active).values_list("pk", flat=True))
    if not ids:
        return 0
    User.objects.filter(pk__in=ids).update(is_active=active)
    if not active:
        user_tokens_revoke(user_ids=ids)
    return len(ids)


def user_deactivate(*, user: User) -> None:
    """Deactivate *user*: they can no longer sign in and their tokens stop working."""
    users_set_active(users=User.objects.filter(pk=user.pk), active=False)
    user.is_active = False


# --- Registration, profile and password ------------------------------------


def _enqueue(task: Any, **kwargs: Any) -> Callable[[], None]:
    """Return a callback that enqueues *task*; a broken queue is logged, not raised."""

    def callback() -> None:
        try:
            task.enqueue(**kwargs)
        except Exception:  # the write has committed: never fail the request now
            logger.exception("could not enqueue %s", task.name)
        else:
            TASKS_ENQUEUED.labels(task=task.name).inc()

    return callback


def _integrity_error(exc: IntegrityError) -> ValidationError:
    """Map a unique violation from a concurrent write to a field error."""
    diag = getattr(exc.__cause__, "diag", None)
    constraint = getattr(diag, "constraint_name", None) or ""
    if "email" in constraint:
        return ValidationError({"email": [EMAIL_TAKEN]})
    return ValidationError({"username": [USERNAME_TAKEN]})


def _suffixed(base: str) -> str:
    return f"{base[: USERNAME_MAX_LENGTH - 7]}-{secrets.token_hex(3)}"


def _check_unique(
    *, email: str | None, username: str | None, exclude: int | None
) -> None:
    """Raise ValidationError if *email* (any case) or *username* is already used."""
    others = User.objects.exclude(pk=exclude) if exclude else User.objects.all()
    errors: dict[str, list[str]] = {}
    if email is not None and others.with_email(email).exists():
        errors["email"] = [EMAIL_TAKEN]
    if username is not None and others.filter(username=username).exists():
        errors["username"] = [USERNAME_TAKEN]
    if errors:
        raise ValidationError(errors)


def user_register(*, email: str, password: str, username: str | None = None) -> User:
    """Create an active user with a hashed password and send a welcome email."""
    _check_unique(email=email, username=username, exclude=None)
    if username is None:
        username = username_from_email(email)
        if User.objects.filter(username=username).exists():
            username = _suffixed(username)
    user = User(email=email, username=username)
    # Hash before the transaction opens: it is the slow part.
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save(force_insert=True)
            transaction.on_commit(_enqueue(send_welcome_email, user_id=user.pk))
    except IntegrityError as exc:
        # Two registrations raced past the check; the constraint picked one.
        raise _integrity_error(exc) from exc
    return user


@transaction.atomic
def user_update(
    *,
    user: User,
    email: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> User:
    """Change *user*'s email, username or password; a new password revokes tokens."""
    _check_unique(email=email, username=username, exclude=user.pk)
    fields = ["updated_at"]
    if email is not None:
        user.email = email
        fields.append("email")
    if username is not None:
        user.username = username
        fields.append("username")
    if password is not None:
        user.set_password(password)
        fields.append("password")
    try:
        with transaction.atomic():
            user.save(update_fields=fields)
    except IntegrityError as exc:
        raise _integrity_error(exc) from exc
    if password is not None:
        user_tokens_revoke(user_ids=[user.pk])
    return user


def user_password_reset_request(*, email: str) -> None:
    """Email a one-time reset link to *email* if it belongs to an active user.

    The lookup happens in the background task, so the answer takes the same
    time whether or not the address exists.
    """
    transaction.on_commit(_enqueue(send_password_reset_email, email=email))


@transaction.atomic
def user_password_reset_confirm(*, uid: str, token: str, password: str) -> User:
    """Set a new password from a reset link; the link then stops working."""
    invalid = ValidationError({"token": ["The reset link is invalid or has expired."]})
    try:
        pk = int(force_str(urlsafe_base64_decode(uid)))
    except (TypeError, ValueError, OverflowError):
        raise invalid from None
    # The row lock makes the token single-use even under concurrent confirms:
    # the second one sees the new password hash, which invalidates the token.
    user = User.objects.active().select_for_update().filter(pk=pk).first()
    if user is None or not default_token_generator.check_token(user, token):
        raise invalid
    cleaned, errors = clean_user(
        {"password": password},
        partial=True,
        current={"email": user.email, "username": user.username},
    )
    if errors or "password" not in cleaned:
        raise ValidationError({"new_password": errors.get("password", [MSG_REQUIRED])})
    user.set_password(cleaned["password"])
    user.save(update_fields=["password", "updated_at"])
    user_tokens_revoke(user_ids=[user.pk])
    return user


# --- Tokens ------------------------------------------------------------------


def _token_user(token: RefreshToken) -> User:
    """Return the active user a refresh token was issued to."""
    try:
        user_id = int(token[jwt_settings.USER_ID_CLAIM])
    except (KeyError, TypeError, ValueError):
        raise AuthenticationFailed(
            "No active account found for the given token.", code="no_active_account"
        ) from None
    user = User.objects.active().filter(pk=user_id).first()
    if user is None:
        raise AuthenticationFailed(
            "No active account found for the given token.", code="no_active_account"
        )
    return user


def tokens_rotate(*, refresh: str) -> dict[str, str]:
    """Exchange a refresh token for a new pair; the old token works exactly once."""
    token = RefreshToken(refresh)  # signature, expiry, type and blacklist
    user = _token_user(token)
    with transaction.atomic():
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=token[jwt_settings.JTI_CLAIM],
            defaults={
                "user": user,
                "created_at": timezone.now(),
                "token": refresh,
                "expires_at": datetime_from_epoch(token["exp"]),
            },
        )
        # get_or_create on the unique token_id: of two concurrent refreshes
        # with the same token, exactly one creates the row and wins.
        _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
        if not created:
            raise TokenError("Token is blacklisted")
        new = RefreshToken.for_user(user)
    return {"access": str(new.access_token), "refresh": str(new)}


def token_revoke(*, refresh: str) -> None:
    """Blacklist a refresh token (sign-out)."""
    RefreshToken(refresh).blacklist()


# --- Bulk --------------------------------------------------------------------


def _unusable_password() -> str:
    # Same shape as make_password(None), whose per-character SystemRandom
    # choice is slow over thousands of rows; one urandom read each is enough.
    return UNUSABLE_PASSWORD_PREFIX + secrets.token_urlsafe(30)


def users_bulk_create(*, rows: Sequence[Any]) -> list[int]:
    """Create users from *rows* in one INSERT, all or nothing; return their ids.

    Raises ItemErrors listing ``{index, errors}`` for every bad row,
    including emails (any case) and usernames repeated in the payload or taken.
    Rows without a password get an unusable one (they can use password reset).
    """
    errors = ItemErrorList()
    cleaned_rows: list[tuple[int, dict[str, Any], bool]] = []
    with_password = 0
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            errors.add(index, "non_field_errors", "Expected an object.")
            continue
        cleaned, row_errors = clean_user(row)
        if row_errors:
            errors.set(index, row_errors)
            continue
        with_password += "password" in cleaned
        explicit = row.get("username") not in (None, "")
        cleaned_rows.append((index, cleaned, explicit))
    if with_password > BULK_MAX_PASSWORDS:
        raise ValidationError(
            {
                "password": [
                    f"At most {BULK_MAX_PASSWORDS} items may carry a password "
                    "(each one is hashed); omit passwords and use password reset."
                ]
            }
        )

    emails = {c["email"].lower() for _, c, _ in cleaned_rows}
    names = {c["username"] for _, c, _ in cleaned_rows}
    taken_emails: set[str] = set()
    taken_names: set[str] = set()
    if cleaned_rows:
        for email, username in User.objects.filter(
            Q(email__lower__in=emails) | Q(username__in=names)
        ).values_list("email", "username"):
            taken_emails.add(email.lower())
            taken_names.add(username)

    seen_emails: set[str] = set()
    used_names = set(taken_names)
    # Explicit usernames claim their names first; derived ones step aside.
    for index, cleaned, explicit in cleaned_rows:
        if explicit and cleaned["username"] in used_names:
            errors.add(index, "username", USERNAME_TAKEN)
        elif explicit:
            used_names.add(cleaned["username"])
    users: list[User] = []
    for index, cleaned, explicit in cleaned_rows:
        email = cleaned["email"].lower()
        if email in taken_emails or email in seen_emails:
            errors.add(index, "email", EMAIL_TAKEN)
        seen_emails.add(email)
        if index in errors:
            continue
        username = cleaned["username"]
        if not explicit:
            while username in used_names:
                username = _suffixed(cleaned["username"])
            used_names.add(username)
        password = cleaned.get("password")
        users.append(
            User(
                email=cleaned["email"],
                username=username,
                password=make_password(password) if password else _unusable_password(),
            )
        )
    errors.raise_any()
    try:
        with transaction.atomic():
            created = User.objects.bulk_create(users)
    except IntegrityError as exc:
        # A concurrent write took an email or username after the check.
        raise _integrity_error(exc) from exc
    BULK_ROWS_WRITTEN.labels(model="user", operation="create").inc(len(created))
    return [user.pk for user in created]


# --- Bulk upsert (import_users, seed_demo) ------------------------------------

# Optional columns (all but the email) are written only when a row carries
# them: an existing user keeps the rest.
_USER_COLUMNS = USER_IMPORT_FIELDS
_USER_MERGE = MergeTarget(
    model=User,
    columns=_USER_COLUMNS,
    conflict="((lower(email)))",
    match="lower(t.email) = lower(s.email)",
    inserted={
        "is_staff": "false",
        "is_superuser": "false",
        "created_at": "now()",
        "updated_at": "now()",
    },
    returning=("id", "is_active"),
    aggregate="coalesce(array_agg(id) FILTER (WHERE NOT inserted AND NOT is_active),"
    " '{}')",
)
_ACTIVE_DEFAULT = User._meta.get_field("is_active").get_default()
# seed_demo's rows carry their own dates and skip any user whose email or
# username is taken.
_USER_ADD = MergeTarget(
    model=User,
    columns=(*_USER_COLUMNS, "is_staff", "is_superuser", "created_at", "updated_at"),
)


def users_ids_by_email(*, emails: Collection[str]) -> dict[str, int]:
    """Return {lower-case email: id} of the users with *emails* (any case)."""
    if not emails:
        return {}
    with connection.cursor() as cursor:
        # One probe of the lower(email) index per address. The plain
        # "lower(email) = ANY(%s)" is planned as a scan of the whole table
        # once the list is a few thousand long (an import batch): 4x slower
        # at 100,000 users, and growing with the table rather than the list.
        # The LIMIT keeps the planner from flattening the LATERAL into that.
        # The addresses go as one text (an array parameter of thousands
        # costs more to encode than the lookup); one with a line break, which
        # no valid address has, matches nobody.
        cursor.execute(
            "SELECT e.email, u.id FROM unnest(string_to_array(%s, E'\\n')) AS"
            " e(email) CROSS JOIN LATERAL (SELECT id FROM accounts_user"
            " WHERE lower(email) = e.email LIMIT 1) AS u",
            ["\n".join({e.lower() for e in emails if "\n" not in e})],
        )
        return dict(cursor.fetchall())


def users_claim_usernames(
    *, rows: Sequence[dict[str, Any]]
) -> dict[int, dict[str, list[str]]]:
    """Return errors by row index for usernames held by another user.

    Rows (email, optional username) are checked against the database in one
    query and against each other. A new user without a username gets one
    derived from the email (with a random suffix when taken) in
    ``row["new_username"]``.
    """
    emails = [row["email"].lower() for row in rows]
    wanted = [row["username"] for row in rows if row.get("username")]
    derived = {
        i: username_from_email(row["email"])
        for i, row in enumerate(rows)
        if not row.get("username")
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lower(email), username FROM accounts_user"
            " WHERE lower(email) = ANY(%s) OR username = ANY(%s)",
            [emails, [*wanted, *derived.values()]],
        )
        found = cursor.fetchall()
    existing = {email for email, _ in found}
    holder = {username: email for email, username in found}
    errors: dict[int, dict[str, list[str]]] = {}
    for i, (row, email) in enumerate(zip(rows, emails, strict=True)):
        username = row.get("username")
        if username:
            if holder.setdefault(username, email) != email:
                errors[i] = {"username": [USERNAME_TAKEN]}
        elif email not in existing:
            username = derived[i]
            while holder.setdefault(username, email) != email:
                username = _suffixed(derived[i])
            row["new_username"] = username
    return errors


def users_hash_passwords(*, rows: Sequence[dict[str, Any]]) -> None:
    """Replace each row's plain ``password`` with a ``password_hash``.

    Slow by design (one deliberate hash per row), so call it before opening a
    transaction. A password that matches the stored hash keeps that hash, so
    a rerun of the same file leaves the user unchanged.
    """
    plain = sorted({row["email"].lower() for row in rows if row.get("password")})
    if not plain:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lower(email), password FROM accounts_user"
            " WHERE lower(email) = ANY(%s)",
            [plain],
        )
        stored = dict(cursor.fetchall())
    for row in rows:
        password = row.pop("password", None)
        if not password:
            continue
        current = stored.get(row["email"].lower())
        if current and check_password(password, current):
            row["password_hash"] = current
        else:
            row["password_hash"] = make_password(password)


@transaction.atomic
def users_upsert(*, rows: Sequence[dict[str, Any]]) -> UpsertResult:
    """Insert or update users by email in any letter case; identical rows stay as is.

    Each row holds a cleaned ``email`` and any of ``username``,
    ``password_hash`` (a Django hash, stored as is), ``password`` (plain text,
    see users_hash_passwords) and ``is_active``; call users_claim_usernames
    first. A new user without a password gets an unusable one (to be set
    through password reset); an existing user keeps its stored email spelling
    and whatever the row does not give. Users deactivated here lose their
    refresh tokens.
    """
    if any(row.get("password") for row in rows):
        users_hash_passwords(rows=rows)
    latest = {row["email"].lower(): row for row in rows}
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for row in latest.values():
        password = row.get("password_hash")
        given = tuple(
            name
            for name, present in (
                ("username", bool(row.get("username"))),
                ("password", password is not None),
                ("is_active", "is_active" in row),
            )
            if present
        )
        groups.setdefault(given, []).append(
            (
                row["email"],
                row.get("username")
                or row.get("new_username")
                or username_from_email(row["email"]),
                password or _unusable_password(),
                row.get("is_active", _ACTIVE_DEFAULT),
            )
        )
    result, extras = staged_merge(_USER_MERGE, groups)
    deactivated = [pk for (inactive,) in extras for pk in inactive]
    if deactivated:
        user_tokens_revoke(user_ids=deactivated)
    if result.created or result.updated:
        # Raw SQL sends no signal: refresh cached reads once this commits.
        bump_on_commit(*user_writes(created=not result.updated))
    return result


@transaction.atomic
def users_add(*, rows: Sequence[Sequence[Any]]) -> int:
    """Insert the user *rows* whose email and username are free; return how many.

    Each row holds email, username, password (a hash), is_active, is_staff,
    is_superuser, created_at and updated_at (demo data); stored users stay as
    they are.
    """
    added = insert_missing(_USER_ADD, rows, skip_triggers=False)
    if added:
        bump_on_commit(*user_writes(created=True))
    return added
