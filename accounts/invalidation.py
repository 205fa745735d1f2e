"""Which cached reads a user write invalidates."""

from __future__ import annotations

from collections.abc import Iterable

from config.cache.namespaces import NAMESPACE_OWNERS, NAMESPACE_USERS

# Columns no cached response shows to anyone but the user: products keep theirs.
_PRIVATE_FIELDS = frozenset({"last_login", "password"})


def user_writes(
    *, created: bool = False, fields: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Return the namespaces a user write touches: owners only when products show it."""
    if created:
        return (NAMESPACE_USERS,)
    if fields is not None and set(fields) <= _PRIVATE_FIELDS:
        return (NAMESPACE_USERS,)
    return (NAMESPACE_USERS, NAMESPACE_OWNERS)
