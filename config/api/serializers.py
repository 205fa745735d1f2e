"""The error shapes every API view answers with, for the OpenAPI schema."""

from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """A plain error."""

    detail = serializers.CharField()
