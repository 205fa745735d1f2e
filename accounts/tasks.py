from __future__ import annotations

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.tasks import task
from django.template.loader import render_to_string
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import User


def password_reset_link(user: User) -> str:
    """Return the one-time password-reset link for *user*."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return f"{settings.FRONTEND_URL.rstrip('/')}/reset-password?uid={uid}&token={token}"


@task
def send_welcome_email(user_id: int) -> None:
    """Send the welcome email to a newly registered user."""
    user = User.objects.active().filter(pk=user_id).first()
    if user is None:
        return
    context = {"user": user, "frontend_url": settings.FRONTEND_URL}
    send_mail(
        subject="Welcome!",
        message=render_to_string("emails/welcome.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )


@task
def send_password_reset_email(email: str) -> None:
    """Email a one-time password-reset link if *email* belongs to an active user."""
    user = User.objects.active().with_email(email).first()
    if user is None:
        return
    context = {"user": user, "link": password_reset_link(user)}
    send_mail(
        subject="Reset your password",
        message=render_to_string("emails/password_reset.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )
