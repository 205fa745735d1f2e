from __future__ import annotations

import copy
import functools
from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import (
    JWTAuthentication as BaseJWTAuthentication,
)
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, Token

from accounts.models import User
from config.cache.namespaces import NAMESPACE_USERS, NamespaceMemo
from config.compiled import CompiledRead, stored_attnames
from config.db_router import fresh_reads

# Signed-in reads find their user here instead of in PostgreSQL. Every user
# write bumps the "users" namespace after commit (the same invalidation as
# cached responses, tested per write path), so a deactivation still takes
# effect on the next request in every process (see README, Caching: the hit path).
_active_users = NamespaceMemo(NAMESPACE_USERS)


class _VerifyOnceBackend:
    """simplejwt's token backend, checking each distinct token's signature once."""

    def decode(self, token: bytes | str, verify: bool = True) -> dict[str, Any]:
        """Return the claims of *token*; verified tokens come from the memo."""
        if not verify:
            return self._backend.decode(token, verify=False)
        # A copy: Token objects may change their payload.
        return dict(self._verified_claims(token))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one module-level instance
    def _verified_claims(self, token: bytes | str) -> dict[str, Any]:
        # Raises (and caches nothing) for a bad signature or an expired token.
        return self._backend.decode(token, verify=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    @functools.cached_property
    def _backend(self) -> Any:
        from rest_framework_simplejwt.state import token_backend

        return token_backend


_verify_once_backend = _VerifyOnceBackend()


class VerifiedOnceAccessToken(AccessToken):
    """An access token whose HMAC signature a process checks once per token.

    The same bytes always verify the same way under the same key, so a token
    seen before skips the signature check and JSON decoding (about a tenth of
    a signed-in cached read). Its claims, expiry included, are still checked
    on every request by ``Token.verify()``.
    """

    @property
    def token_backend(self) -> Any:
        return _verify_once_backend


# is_active is part of the lookup (a primary-key probe): one query, whose SQL
# is compiled once (a write's user load cost 0.7 ms of CPU through the ORM).
_ACTIVE_USER = CompiledRead(
    lambda query: query.active().values_list(*stored_attnames(query.model))
)


def _active_user(user_id: int) -> User | None:
    return _ACTIVE_USER.instance(User.objects.all(), user_id)


def _current_active_user(user_id: int) -> User | None:
    # Kept under the version just read: never from a replica that has not
    # replayed the write behind it (a deactivation must take effect).
    with fresh_reads():
        return _active_user(user_id)


class JWTAuthentication(BaseJWTAuthentication):
    """Bearer-token authentication of active users.

    Reads (GET, HEAD, OPTIONS) take the user from a per-process memo checked
    against the "users" namespace version (one Redis round trip, no query);
    writes always load it from PostgreSQL, as does every request while Redis
    is down: a write may save its user, and a deactivation whose bump Redis
    missed must stop writes at once, not at the next ledger poll.
    """

    def authenticate(self, request: Request) -> tuple[Any, Token] | None:
        self._read_only = request.method in SAFE_METHODS
        return super().authenticate(request)

    def get_user(self, validated_token: Token) -> Any:
        try:
            user_id = int(validated_token[api_settings.USER_ID_CLAIM])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken(
                "Token contained no recognizable user identification"
            ) from exc
        if getattr(self, "_read_only", False):
            kept = _active_users.get(
                user_id, functools.partial(_current_active_user, user_id)
            )
            # A copy per request: views may set attributes on request.user.
            user = copy.copy(kept) if kept is not None else None
        else:
            user = _active_user(user_id)
        if user is None:
            raise AuthenticationFailed(
                "User not found or inactive.", code="user_inactive"
            )
        return user


class JWTScheme(SimpleJWTScheme):
    """Describe JWTAuthentication as a bearer scheme in the OpenAPI schema."""

    target_class = "accounts.api.authentication.JWTAuthentication"
