from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog.models import Category, Product
from catalog.services import products_set_active
from config.admin_display import CompactChangelistMixin, shortened
from config.counting import EstimatedCountPaginator


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
class ProductAdmin(CompactChangelistMixin, admin.ModelAdmin):
    """Find and bulk-fix products; fast on a catalog of millions of rows."""

    # Short text columns and a compact date keep the editable price, stock
    # and is_active in view at 1280 px (with config/admin-changelist.css).
    list_display = [
        "sku",
        "short_name",
        "short_category",
        "short_owner",
        "price",
        "stock",
        "is_active",
        "created",
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

    @admin.display(description="name", ordering="name")
    def short_name(self, product: Product) -> str:
        return shortened(product.name, 28)

    @admin.display(description="category", ordering="category__name")
    def short_category(self, product: Product) -> str:
        return shortened(product.category.name, 16)

    @admin.display(description="owner", ordering="owner__email")
    def short_owner(self, product: Product) -> str:
        return shortened(product.owner.email, 22)

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
