from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import (
    AllowAny,
    BasePermission,
    IsAdminUser,
    IsAuthenticated,
)
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.api import serializers as s
from accounts.api.permissions import IsSelfOrStaff
from accounts.models import User
from accounts.services import (
    token_revoke,
    user_deactivate,
    user_password_reset_confirm,
    user_password_reset_request,
    user_register,
    user_update,
    users_bulk_create,
)
from config.api.mixins import bulk_items
from config.api.serializers import BulkErrorSerializer
from config.api.throttles import (
    LoginEmailRateThrottle,
    LoginRateThrottle,
    PasswordResetRateThrottle,
    RateLimitHeadersMixin,
    RegisterRateThrottle,
)
from config.cache import NAMESPACE_USERS, CachedViewMixin


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Return the documented error responses for *codes*."""
    described = {
        400: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="Invalid input: field errors, or {detail} for a bad body.",
        ),
        401: OpenApiResponse(
            s.DetailSerializer, description="Missing, invalid or expired credentials."
        ),
        403: OpenApiResponse(s.DetailSerializer, description="Not allowed."),
        404: OpenApiResponse(s.DetailSerializer, description="No such user."),
        413: OpenApiResponse(s.DetailSerializer, description="Request body too large."),
        429: OpenApiResponse(
            s.DetailSerializer,
            description="Throttled; see the Retry-After and RateLimit headers.",
        ),
    }
    return {code: described[code] for code in codes}


# --- Tokens ------------------------------------------------------------------


@extend_schema(
    tags=["auth"],
    summary="Sign in with email and password",
    responses={200: s.TokenPairSerializer, **_errors(400, 401, 429)},
)
class TokenObtainView(RateLimitHeadersMixin, jwt_views.TokenObtainPairView):
    """Exchange email and password for an access and a refresh token."""

    throttle_classes = [LoginRateThrottle, LoginEmailRateThrottle]


@extend_schema(
    tags=["auth"],
    summary="Rotate a refresh token",
    request=s.TokenRefreshSerializer,
    responses={200: s.TokenPairSerializer, **_errors(400, 401)},
)
class TokenRefreshView(jwt_views.TokenRefreshView):
    """Exchange a refresh token for a new pair; the used one is blacklisted."""

    serializer_class = s.TokenRefreshSerializer  # type: ignore[assignment]


@extend_schema(
    tags=["auth"],
    summary="Verify a token",
    responses={200: OpenApiTypes.OBJECT, **_errors(400, 401)},
)
class TokenVerifyView(jwt_views.TokenVerifyView):
    """Answer 200 if a token is valid, unexpired, not revoked and its user active."""

    serializer_class = s.TokenVerifySerializer  # type: ignore[assignment]


class AnonymousView(APIView):
    """A view whose credentials, if any, travel in the body (tokens, reset links)."""

    permission_classes = [AllowAny]
    authentication_classes: list[type] = []

    def get_authenticate_header(self, request: Request) -> str:
        # Without it DRF turns a 401 (a bad token in the body) into a 403.
        return 'Bearer realm="api"'


class LogoutView(AnonymousView):
    """Revoke a refresh token."""

    serializer_class = s.LogoutSerializer

    @extend_schema(
        tags=["auth"],
        summary="Sign out (revoke a refresh token)",
        request=s.LogoutSerializer,
        responses={204: None, **_errors(400, 401)},
    )
    def post(self, request: Request) -> Response:
        serializer = s.LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token_revoke(refresh=serializer.validated_data["refresh"])
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class PasswordResetView(RateLimitHeadersMixin, AnonymousView):
    """Email a one-time reset link; always 202, whether the address exists or not."""

    throttle_classes = [PasswordResetRateThrottle]
    serializer_class = s.PasswordResetSerializer

    @extend_schema(
        tags=["auth"],
        summary="Request a password-reset email",
        request=s.PasswordResetSerializer,
        responses={202: s.DetailSerializer, **_errors(400, 429)},
    )
    def post(self, request: Request) -> Response:
        serializer = s.PasswordResetSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user_password_reset_request(email=serializer.validated_data["email"])
        return Response(
            {"detail": "If the address has an account, a reset link is on its way."},
            status=status.HTTP_202_ACCEPTED,
        )


class PasswordResetConfirmView(RateLimitHeadersMixin, AnonymousView):
    """Set a new password with the uid and token from a reset link."""

    throttle_classes = [PasswordResetRateThrottle]
    serializer_class = s.PasswordResetConfirmSerializer

    @extend_schema(
        tags=["auth"],
        summary="Confirm a password reset",
        request=s.PasswordResetConfirmSerializer,
        responses={200: s.DetailSerializer, **_errors(400, 429)},
    )
    def post(self, request: Request) -> Response:
        serializer = s.PasswordResetConfirmSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user_password_reset_confirm(
            uid=data["uid"], token=data["token"], password=data["new_password"]
        )
        return Response({"detail": "Your password has been changed."})


# --- Users -------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        summary="List users (active ones only, unless you are staff)",
        parameters=[
            OpenApiParameter(
                "search",
                str,
                description="Username prefix (staff: also email prefix, any case).",
            ),
            OpenApiParameter(
                "ordering",
                str,
                enum=["created_at", "-created_at"],
                description="Sort by sign-up time (default: newest first).",
            ),
        ],
        responses={200: s.UserSerializer(many=True), **_errors(400, 401)},
    ),
    retrieve=extend_schema(
        summary="Get a user",
        responses={200: s.UserSerializer, **_errors(401, 404)},
    ),
    create=extend_schema(
        summary="Register",
        request=s.UserCreateSerializer,
        responses={201: s.UserSerializer, **_errors(400, 429)},
    ),
    update=extend_schema(
        summary="Replace your profile (or any, as staff)",
        request=s.UserUpdateSerializer,
        responses={200: s.UserSerializer, **_errors(400, 401, 403, 404)},
    ),
    partial_update=extend_schema(
        summary="Change your profile (or any, as staff)",
        request=s.UserUpdateSerializer,
        responses={200: s.UserSerializer, **_errors(400, 401, 403, 404)},
    ),
    destroy=extend_schema(
        summary="Deactivate a user and revoke their tokens",
        responses={204: None, **_errors(401, 403, 404)},
    ),
)
@extend_schema(tags=["users"])
class UserViewSet(
    RateLimitHeadersMixin,
    CachedViewMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Register, list, read, change and deactivate users."""

    serializer_class = s.UserSerializer
    # Emails show to their owner and to staff, and /users/me/ is the caller.
    cache_namespaces = (NAMESPACE_USERS,)
    cache_actions = ("list", "retrieve", "me")
    cache_vary = "user"
    cache_ttl_settings = {"retrieve": "USER_CACHE_TTL", "me": "USER_CACHE_TTL"}

    def get_queryset(self) -> QuerySet[User]:
        queryset = User.objects.visible_to(self.request.user)
        if self.action == "list":
            params = self.request.query_params
            queryset = queryset.search(
                params.get("search", ""), by_email=self.request.user.is_staff
            )
            ordering = params.get("ordering", "-created_at")
            if ordering not in ("created_at", "-created_at"):
                raise ValidationError({"ordering": ["Use created_at or -created_at."]})
            # The id breaks ties between equal timestamps so pages never overlap.
            queryset = queryset.order_by(ordering, ordering.replace("created_at", "id"))
        return queryset

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "create":
            return [AllowAny()]
        if self.action == "bulk":
            return [IsAdminUser()]
        if self.action in ("update", "partial_update", "destroy"):
            return [IsAuthenticated(), IsSelfOrStaff()]
        return [IsAuthenticated()]

    def get_throttles(self) -> list[BaseThrottle]:
        if self.action == "create":
            return [RegisterRateThrottle()]
        return super().get_throttles()

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "create":
            return s.UserCreateSerializer
        if self.action in ("update", "partial_update") or (
            self.action == "me" and self.request.method == "PATCH"
        ):
            return s.UserUpdateSerializer
        if self.action == "bulk":
            return s.UserBulkItemSerializer
        return s.UserSerializer

    def perform_create(self, serializer: BaseSerializer) -> None:
        serializer.instance = user_register(**serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer) -> None:
        serializer.instance = user_update(
            user=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance: User) -> None:
        user_deactivate(user=instance)

    @extend_schema(
        methods=["GET"],
        summary="Your profile",
        responses={200: s.UserSerializer, **_errors(401)},
    )
    @extend_schema(
        methods=["PATCH"],
        summary="Change your profile",
        request=s.UserUpdateSerializer,
        responses={200: s.UserSerializer, **_errors(400, 401)},
    )
    @action(detail=False, methods=["get", "patch"], url_path="me")
    def me(self, request: Request) -> Response:
        """Return or change the signed-in user's own profile."""
        if request.method == "GET":
            return Response(
                s.UserSerializer(request.user, context={"request": request}).data
            )
        serializer = s.UserUpdateSerializer(
            request.user,
            data=request.data,
            partial=True,
            context=self.get_serializer_context(),
        )
        serializer.is_valid(raise_exception=True)
        self.perform_update(serializer)
        return Response(serializer.data)

    @extend_schema(
        summary="Create up to BULK_MAX_ITEMS users in one statement (staff)",
        request=s.UserBulkItemSerializer(many=True),
        responses={
            201: s.UserBulkCreateResultSerializer,
            400: OpenApiResponse(
                BulkErrorSerializer,
                description="Nothing was created: every bad item as {index, errors}"
                " (or {detail} for a bad body).",
            ),
            **_errors(401, 403, 413),
        },
    )
    @action(detail=False, methods=["post"], url_path="bulk")
    def bulk(self, request: Request) -> Response:
        """Create users all or nothing; rows without a password get an unusable one."""
        ids = users_bulk_create(rows=bulk_items(request.data))
        return Response(
            {"created": len(ids), "ids": ids}, status=status.HTTP_201_CREATED
        )
