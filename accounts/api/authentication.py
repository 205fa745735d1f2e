from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import (
    JWTAuthentication as BaseJWTAuthentication,
)
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token

from accounts.models import User


class JWTAuthentication(BaseJWTAuthentication):
    """Bearer-token authentication that loads an active user in one indexed query."""

    def get_user(self, validated_token: Token) -> Any:
        try:
            user_id = int(validated_token[api_settings.USER_ID_CLAIM])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken(
                "Token contained no recognizable user identification"
            ) from exc
        # is_active is part of the lookup (a primary-key probe), so a
        # deactivation takes effect on the very next request, with no cache to
        # invalidate and no second query.
        user = User.objects.active().filter(pk=user_id).first()
        if user is None:
            raise AuthenticationFailed(
                "User not found or inactive.", code="user_inactive"
            )
        return user


class JWTScheme(SimpleJWTScheme):
    """Describe JWTAuthentication as a bearer scheme in the OpenAPI schema."""

    target_class = "accounts.api.authentication.JWTAuthentication"
