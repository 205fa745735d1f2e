"""The error shapes every API view answers with, for the OpenAPI schema."""

from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """A plain error."""

    detail = serializers.CharField()


class BulkItemErrorSerializer(serializers.Serializer):
    """The errors of one rejected item, by its position in the payload."""

    index = serializers.IntegerField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField())
    )


class BulkErrorSerializer(serializers.Serializer):
    """Answer of a rejected bulk request: nothing was written."""

    detail = serializers.CharField()
    errors = BulkItemErrorSerializer(many=True, required=False)
