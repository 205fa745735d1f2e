from django.core.management.base import BaseCommand, CommandError

from accounts.models import User


class Command(BaseCommand):
    help = "Create or reuse a staff superuser with the given email and password."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--password", required=True)

    def handle(self, *args, **options) -> None:
        email, password = options["email"], options["password"]
        if len(password) < 8:
            raise CommandError("The admin password must be at least 8 characters.")
        user = User.objects.with_email(email).first()
        if user is None:
            user = User.objects.create_superuser(email=email, password=password)
            verb = "Created"
        else:
            user.is_active = user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
            verb = "Reused"
        self.stdout.write(f"{verb} admin login {user.email}", self.style.SUCCESS)
