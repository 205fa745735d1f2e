from rest_framework import pagination


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """Limit/offset pages: 20 items by default, 100 at most."""

    default_limit = 20
    max_limit = 100
