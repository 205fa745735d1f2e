"""Opt-in error reporting: imported by the settings only when SENTRY_DSN is set."""

from __future__ import annotations

import sentry_sdk
from sentry_sdk.integrations.django import DjangoIntegration


def init_sentry(*, dsn: str, environment: str, traces_sample_rate: float) -> None:
    """Start sentry-sdk with its Django integration, sending no personal data."""
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration()],
        # Tracing costs time on every request; errors are what this hook is for.
        traces_sample_rate=traces_sample_rate,
        # No user emails, IP addresses, cookies or request bodies in events.
        send_default_pii=False,
    )
