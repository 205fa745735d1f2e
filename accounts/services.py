from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from rest_framework_simplejwt.token_blacklist.models import (
    BlacklistedToken,
    OutstandingToken,
)

from accounts.models import User


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
