from django.contrib.auth import forms as auth_forms

from accounts.models import User


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
