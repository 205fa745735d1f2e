from django.contrib.auth import forms as auth_forms

from accounts.models import User
from accounts.services import user_tokens_revoke


class UserCreationForm(auth_forms.UserCreationForm):
    """Admin form that creates a user from email, username and a password."""

    class Meta:
        model = User
        fields = ("email", "username")


class UserChangeForm(auth_forms.UserChangeForm):
    """Admin form that edits a user; the password is changed through its own form."""

    class Meta:
        model = User
        fields = "__all__"


class AdminPasswordChangeForm(auth_forms.AdminPasswordChangeForm):
    """Admin form that sets a password and signs the user out of every device."""

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=commit)
        if commit:
            user_tokens_revoke(user_ids=[user.pk])
        return user
