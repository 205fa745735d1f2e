from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from django.db.models import CharField
        from django.db.models.functions import Lower

        # Lets `email__lower=` use the Lower(email) unique index.
        CharField.register_lookup(Lower)

        from accounts import signals  # noqa: F401  (connects cache invalidation)
