from django.contrib.postgres.fields import ArrayField
from django.db import models


class CacheBump(models.Model):
    """A namespace bump committed with its write and not yet known to be in Redis."""

    names = ArrayField(models.TextField())
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "pending cache invalidation"

    def __str__(self) -> str:
        return ", ".join(self.names)
