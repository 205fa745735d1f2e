from django.contrib.auth.backends import ModelBackend


class EmailBackend(ModelBackend):
    """Authenticate by email in any letter case (see UserManager.get_by_natural_key)."""
