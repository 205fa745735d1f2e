from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import (
    TokenRefreshSerializer as BaseTokenRefreshSerializer,
)
from rest_framework_simplejwt.serializers import (
    TokenVerifySerializer as BaseTokenVerifySerializer,
)
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import UntypedToken

from accounts.models import User
from accounts.services import tokens_rotate
from accounts.validation import (
    EMAIL_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    USERNAME_MAX_LENGTH,
    clean_user,
)


def _password_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(
        write_only=True,
        trim_whitespace=False,
        max_length=PASSWORD_MAX_LENGTH,
        style={"input_type": "password"},
        **kwargs,
    )


class DetailSerializer(serializers.Serializer):
    """A short message, of success or of error: ``{"detail": "..."}``."""

    detail = serializers.CharField()


# --- Tokens ------------------------------------------------------------------


class TokenPairSerializer(serializers.Serializer):
    """An access token and a refresh token."""

    access = serializers.CharField(read_only=True)
    refresh = serializers.CharField(read_only=True)


class TokenRefreshSerializer(BaseTokenRefreshSerializer):
    """Exchange a refresh token for a new pair; the old one stops working."""

    refresh = serializers.CharField()
    access = serializers.CharField(read_only=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        return tokens_rotate(refresh=attrs["refresh"])


class TokenVerifySerializer(BaseTokenVerifySerializer):
    """Check a token's signature, expiry, blacklist and that its user is active."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        token = UntypedToken(attrs["token"])  # signature and expiry
        jti = token.get(jwt_settings.JTI_CLAIM)
        if BlacklistedToken.objects.filter(token__jti=jti).exists():
            raise InvalidToken("Token is blacklisted")
        try:
            user_id = int(token.get(jwt_settings.USER_ID_CLAIM))
        except (TypeError, ValueError):
            raise InvalidToken("Token contained no recognizable user id") from None
        if not User.objects.active().filter(pk=user_id).exists():
            raise InvalidToken("No active account found for the given token.")
        return {}


class LogoutSerializer(serializers.Serializer):
    """The refresh token to revoke."""

    refresh = serializers.CharField()


class PasswordResetSerializer(serializers.Serializer):
    """The address to send a reset link to."""

    # An email address, not any string (nor a number DRF would turn into one).
    email = serializers.EmailField(max_length=EMAIL_MAX_LENGTH)


class PasswordResetConfirmSerializer(serializers.Serializer):
    """The uid and token from the reset link, and the new password."""

    uid = serializers.CharField(max_length=64)
    token = serializers.CharField(max_length=128)
    new_password = _password_field()


# --- Users -------------------------------------------------------------------


class UserSerializer(serializers.ModelSerializer[User]):
    """A user; ``email`` and ``is_staff`` only for the user themself and for staff."""

    class Meta:
        model = User
        fields = ["id", "username", "email", "is_active", "is_staff", "created_at"]
        read_only_fields = fields
        # Shown to the user themself and to staff only (and so optional in
        # the schema: config.api.schema).
        optional_fields = ["email", "is_staff"]

    def to_representation(self, instance: User) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        viewer = getattr(request, "user", None)
        if not self.context.get("show_email") and not (
            viewer is not None
            and viewer.is_authenticated
            and (viewer.is_staff or viewer.pk == instance.pk)
        ):
            for name in self.Meta.optional_fields:
                data.pop(name, None)
        return data


class UserCreateSerializer(serializers.Serializer):
    """Registration: email, optional username (derived from the email), password."""

    email = serializers.CharField(max_length=EMAIL_MAX_LENGTH)
    username = serializers.CharField(max_length=USERNAME_MAX_LENGTH, required=False)
    password = _password_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        data = {**attrs}
        username_given = "username" in data
        cleaned, errors = clean_user(data)
        if errors:
            raise serializers.ValidationError(errors)
        if not username_given:
            # The service picks a free name derived from the email.
            cleaned.pop("username", None)
        return cleaned

    def to_representation(self, instance: User) -> dict[str, Any]:
        # The registrant is anonymous but may see the address they just sent.
        context = {**self.context, "show_email": True}
        return UserSerializer(instance, context=context).data


class UserUpdateSerializer(serializers.Serializer):
    """Profile changes; a new password needs ``current_password`` from its owner."""

    email = serializers.CharField(max_length=EMAIL_MAX_LENGTH)
    username = serializers.CharField(max_length=USERNAME_MAX_LENGTH)
    password = _password_field(required=False)
    current_password = _password_field(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user: User = self.instance
        data = {k: attrs[k] for k in ("email", "username", "password") if k in attrs}
        cleaned, errors = clean_user(
            data,
            partial=True,
            current={"email": user.email, "username": user.username},
        )
        if "password" in data:
            requester = self.context["request"].user
            # Staff may set another user's password; the owner proves it is them.
            if requester.pk == user.pk or not requester.is_staff:
                current = attrs.get("current_password")
                if not current:
                    errors["current_password"] = [
                        "This field is required to change the password."
                    ]
                elif not user.check_password(current):
                    errors["current_password"] = ["The current password is wrong."]
        if errors:
            raise serializers.ValidationError(errors)
        return cleaned

    def to_representation(self, instance: User) -> dict[str, Any]:
        return UserSerializer(instance, context=self.context).data


class UserBulkItemSerializer(serializers.Serializer):
    """One user of a bulk create (checked by clean_user, not by this class)."""

    email = serializers.EmailField(max_length=EMAIL_MAX_LENGTH)
    username = serializers.CharField(max_length=USERNAME_MAX_LENGTH, required=False)
    password = _password_field(required=False)


class UserBulkCreateResultSerializer(serializers.Serializer):
    """How many users were created, and their ids in payload order."""

    created = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.IntegerField())
