"""Cache invalidation for user saves and deletes (admin forms, plain ORM)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.invalidation import user_writes
from accounts.models import User
from config.cache.namespaces import bump_on_commit


@receiver(post_save, sender=User, dispatch_uid="accounts_user_saved")
def user_saved(
    sender: type,
    using: str,
    created: bool,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    """Refresh cached user reads (and products showing the user) after commit."""
    names = user_writes(created=created, fields=update_fields)
    bump_on_commit(*names, using=using)


@receiver(post_delete, sender=User, dispatch_uid="accounts_user_deleted")
def user_deleted(sender: type, using: str, **kwargs: Any) -> None:
    """Refresh cached user reads (and products showing the user) after commit."""
    bump_on_commit(*user_writes(), using=using)
