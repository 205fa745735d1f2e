from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView


class IsSelfOrStaff(BasePermission):
    """Allow a user to change only their own account; staff may change any."""

    message = "You may only change your own account."

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        user = request.user
        return bool(user and (user.is_staff or obj.pk == user.pk))
