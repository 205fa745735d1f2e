from collections.abc import Sequence
from typing import Any

from django.contrib.auth.hashers import identify_hasher

from accounts.services import (
    users_claim_usernames,
    users_hash_passwords,
    users_upsert,
)
from accounts.validation import USER_IMPORT_FIELDS, clean_user
from config.bulkio import ImportCommand, Record, Rejection, UpsertResult
from config.metrics import BULK_ROWS_WRITTEN
from config.validation import clean_bool


def _is_hash(value: str) -> bool:
    """Return whether *value* is a hash of one of PASSWORD_HASHERS."""
    try:
        identify_hasher(value)
    except ValueError:
        return False
    return True


class Command(ImportCommand):
    help = (
        "Create or update users from a CSV or JSON Lines file ('-' for stdin), "
        "upserting on email in any letter case, in batches of one transaction "
        "each. Columns: email, and optionally username (derived from the email "
        "for new users), password and is_active. A password may be an existing "
        "Django hash (stored as is), plain text (validated, then hashed: slow, "
        "one deliberately costly hash per row), or empty (new users get an "
        "unusable password, to be set through password reset; existing users "
        "keep theirs). An email repeated in the file, in any case: the last "
        "occurrence wins, and the lines are named. Lines that cannot be read "
        "(bad UTF-8, broken CSV quoting, invalid JSON) are rejected, the others "
        "load. Unknown columns are ignored with a notice (refused with "
        "--strict); columns starting with '_' are ignored silently, so an "
        "--errors file can be fixed and fed back. Exits non-zero when any row "
        "is rejected."
    )
    columns = USER_IMPORT_FIELDS
    required = ("email",)
    key_name = "email"

    def row_key(self, row: Any) -> Any:
        return row["email"].lower()

    def validate(self, records: Sequence[Record]) -> tuple[list[Any], list[Rejection]]:
        """Check rows with the API's rules (email, username, password)."""
        items: list[tuple[dict[str, Any], Record]] = []
        rejections: list[Rejection] = []
        for record in records:
            data = record.data
            password = data.get("password")
            password_hash = None
            if isinstance(password, str) and password and _is_hash(password):
                password_hash, password = password, None
            payload = {
                "email": data.get("email"),
                "username": data.get("username"),
                "password": password,
            }
            cleaned, errors = clean_user(payload)
            if not data.get("username"):
                cleaned.pop("username", None)
            if data.get("is_active") not in (None, ""):
                active, error = clean_bool(data["is_active"])
                if error:
                    errors["is_active"] = [error]
                else:
                    cleaned["is_active"] = active
            if errors:
                rejections.append(Rejection(record.line, data, errors))
                continue
            if password_hash:
                cleaned["password_hash"] = password_hash
            items.append((cleaned, record))
        return items, rejections

    def prepare(
        self, items: list[Any]
    ) -> tuple[list[tuple[int, Any]], list[Rejection]]:
        """Check usernames in one query, then hash plain-text passwords."""
        rows = [cleaned for cleaned, _ in items]
        lines = [record for _, record in items]
        rejections: list[Rejection] = []
        taken = users_claim_usernames(rows=rows)
        for index, errors in taken.items():
            rejections.append(Rejection(lines[index].line, lines[index].data, errors))
        kept = [(lines[i].line, row) for i, row in enumerate(rows) if i not in taken]
        users_hash_passwords(rows=[row for _, row in kept])
        return kept, rejections

    def upsert(self, rows: list[Any]) -> UpsertResult:
        result = users_upsert(rows=rows)
        # users_upsert bumps the users cache namespaces on commit itself.
        if not self.options["dry_run"] and (result.created or result.updated):
            BULK_ROWS_WRITTEN.labels(model="user", operation="create").inc(
                result.created
            )
            BULK_ROWS_WRITTEN.labels(model="user", operation="update").inc(
                result.updated
            )
        return result
