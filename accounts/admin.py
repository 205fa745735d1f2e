from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm
from accounts.models import User
from accounts.services import users_set_active
from config.admin_display import CompactChangelistMixin, shortened
from config.counting import EstimatedCountPaginator


@admin.register(User)
class UserAdmin(CompactChangelistMixin, DjangoUserAdmin):
    """Find, edit, activate and deactivate users; passwords through Django's forms."""

    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm
    list_display = ["short_email", "short_username", "is_active", "is_staff", "created"]
    list_filter = ["is_active", "is_staff", "is_superuser", "created_at"]
    # Prefix and exact lookups keep the search on the (email|username, is_active)
    # indexes' leading columns instead of a sequential %term% scan.
    search_fields = ["^email", "^username"]
    ordering = ["-created_at"]
    readonly_fields = ["created_at", "updated_at", "last_login"]
    fieldsets = [
        (None, {"fields": ["email", "username", "password"]}),
        (
            "Permissions",
            {
                "fields": [
                    "is_active",
                    "is_staff",
                    "is_superuser",
                    "groups",
                    "user_permissions",
                ]
            },
        ),
        ("Dates", {"fields": ["last_login", "created_at", "updated_at"]}),
    ]
    add_fieldsets = [
        (
            None,
            {
                "classes": ["wide"],
                "fields": ["email", "username", "password1", "password2"],
            },
        ),
    ]
    filter_horizontal = ["groups", "user_permissions"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = ["activate_users", "deactivate_users"]

    @admin.display(description="email", ordering="email")
    def short_email(self, user: User) -> str:
        return shortened(user.email, 40)

    @admin.display(description="username", ordering="username")
    def short_username(self, user: User) -> str:
        return shortened(user.username, 24)

    @admin.action(description="Activate selected users")
    def activate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = users_set_active(users=queryset, active=True)
        self.message_user(request, f"Activated {count} user(s).", messages.SUCCESS)

    @admin.action(description="Deactivate selected users (revokes their tokens)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = users_set_active(users=queryset, active=False)
        self.message_user(request, f"Deactivated {count} user(s).", messages.SUCCESS)
