from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog.models import Category, Product
from catalog.services import products_set_active
from config.paginators import EstimatedCountPaginator


class InStockFilter(admin.SimpleListFilter):
    title = "stock"
    parameter_name = "in_stock"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        return [("yes", "In stock"), ("no", "Out of stock")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Product]):
        if self.value() == "yes":
            return queryset.filter(stock__gt=0)
        if self.value() == "no":
            return queryset.filter(stock=0)
        return queryset


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    """Edit categories; slugs are filled from the name."""

    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    ordering = ["name"]
    readonly_fields = ["created_at", "updated_at"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    """Find and bulk-fix products; fast on a catalog of millions of rows."""

    list_display = [
        "sku",
        "name",
        "category",
        "owner",
        "price",
        "stock",
        "is_active",
        "created_at",
    ]
    list_filter = ["is_active", InStockFilter, "category"]
    # "=sku" (exact) and "^name" (prefix) are served by the trigram indexes on
    # UPPER(sku) / UPPER(name); a bare "name" would be a %term% scan of every row.
    search_fields = ["=sku", "^name"]
    ordering = ["-created_at", "-id"]
    list_select_related = ["category", "owner"]
    autocomplete_fields = ["category", "owner"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["sku", "name", "slug", "description"]}),
        ("Sale", {"fields": ["price", "stock", "is_active", "category", "owner"]}),
        ("Dates", {"fields": ["created_at", "updated_at"]}),
    ]
    list_editable = ["price", "stock", "is_active"]
    date_hierarchy = "created_at"
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = ["activate_products", "deactivate_products"]

    @admin.action(description="Put selected products on sale")
    def activate_products(
        self, request: HttpRequest, queryset: QuerySet[Product]
    ) -> None:
        count = products_set_active(products=queryset, active=True)
        self.message_user(request, f"Activated {count} product(s).", messages.SUCCESS)

    @admin.action(description="Take selected products off sale")
    def deactivate_products(
        self, request: HttpRequest, queryset: QuerySet[Product]
    ) -> None:
        count = products_set_active(products=queryset, active=False)
        self.message_user(request, f"Deactivated {count} product(s).", messages.SUCCESS)
