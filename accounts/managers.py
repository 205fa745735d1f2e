from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.contrib.auth.base_user import BaseUserManager
from django.db import models

from accounts.invalidation import user_writes
from config.cache.namespaces import InvalidatingQuerySetMixin

if TYPE_CHECKING:
    from accounts.models import User


class UserQuerySet(InvalidatingQuerySetMixin, models.QuerySet["User"]):
    def cache_namespaces_written(
        self,
        *,
        created: bool = False,
        fields: Iterable[str] | None = None,
        pks: Iterable[Any] | None = None,
    ) -> tuple[str, ...]:
        """Return the namespaces a write of *fields* (or a creation) invalidates."""
        return user_writes(created=created, fields=fields)

    def active(self) -> UserQuerySet:
        """Return users that may sign in."""
        return self.filter(is_active=True)

    def with_email(self, email: str) -> UserQuerySet:
        """Return the user with *email* in any letter case (Lower index)."""
        return self.filter(email__lower=email.strip().lower())

    def visible_to(self, user: Any) -> UserQuerySet:
        """Return the users *user* may see: all for staff, active ones otherwise."""
        if getattr(user, "is_staff", False):
            return self.all()
        return self.active()

    def search(self, term: str, *, by_email: bool = False) -> UserQuerySet:
        """Return users whose username (or, if *by_email*, email) starts with *term*.

        Prefix matches use the (username, is_active) and Lower(email) b-tree
        indexes; a %term% match would scan the table.
        """
        term = term.strip()
        if not term:
            return self
        condition = models.Q(username__startswith=term)
        if by_email:
            condition |= models.Q(email__lower__startswith=term.lower())
        return self.filter(condition)


class UserManager(BaseUserManager.from_queryset(UserQuerySet)):  # type: ignore[misc]
    """Manager for email-login users."""

    use_in_migrations = True

    def get_by_natural_key(self, username: str | None) -> User:
        """Return the user whose email matches *username* in any letter case."""
        return self.with_email(username or "").get()

    def _create_user(
        self, email: str, password: str | None, **extra_fields: Any
    ) -> User:
        if not email:
            raise ValueError("The email must be set")
        email = self.normalize_email(email.strip())
        extra_fields.setdefault("username", email.split("@")[0])
        user = self.model(email=email, **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(
        self, email: str, password: str | None = None, **extra_fields: Any
    ) -> User:
        """Create a regular user."""
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(
        self, email: str, password: str | None = None, **extra_fields: Any
    ) -> User:
        """Create a staff superuser."""
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        if extra_fields.get("is_staff") is not True:
            raise ValueError("Superuser must have is_staff=True.")
        if extra_fields.get("is_superuser") is not True:
            raise ValueError("Superuser must have is_superuser=True.")
        return self._create_user(email, password, **extra_fields)
