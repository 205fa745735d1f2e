"""Response caching: fail-open Redis backend, namespace versions, cached views.

- ``config.cache.backend``: the Redis backend that logs, counts and never raises;
- ``config.cache.local_copies``: values read from Redis kept in the process
  until Redis says they changed (its server-assisted client-side caching);
- ``config.cache.namespaces``: namespace versions, bumps after commit, and the
  QuerySet mixin that bumps on bulk writes;
- ``config.cache.views``: response keys, ``get_or_compute``, ``CachedViewMixin``.
"""
