from typing import Any

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone

from catalog.invalidation import product_writes
from catalog.managers import CategoryManager, ProductManager
from config.cache.namespaces import bump_on_commit

SKU_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9._-]{1,64}$",
    "SKU must be 1-64 characters of letters, digits, '.', '_' or '-'.",
)
PRICE_MAX_DIGITS = 12


class Category(models.Model):
    """A group of products, addressed by its unique slug."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CategoryManager()

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    """An item for sale, identified by its unique SKU."""

    sku = models.CharField(
        "SKU", max_length=64, unique=True, validators=[SKU_VALIDATOR]
    )
    name = models.CharField(max_length=200)
    # Not indexed: nothing looks products up by slug, and every index is paid
    # for on each insert and (non-HOT) update of a bulk write or import.
    slug = models.SlugField(max_length=200, blank=True, db_index=False)
    description = models.TextField(blank=True)
    price = models.DecimalField(
        max_digits=PRICE_MAX_DIGITS,
        decimal_places=2,
        validators=[MinValueValidator(0)],
    )
    stock = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    is_active = models.BooleanField(default=True)
    # catalog_product_cat_new (category_id, is_active, ...) serves the FK lookups.
    category = models.ForeignKey(
        Category, on_delete=models.PROTECT, related_name="products", db_index=False
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="products"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # What ?search= matches in words (docs/search.md): the English full-text
    # document of name (weight A) and description (B), computed by PostgreSQL
    # on every write. Stored, so matching a row is a cheap @@ on this column
    # (no to_tsvector per row) and ANALYZE keeps per-word statistics that let
    # the planner tell a common word from a rare one.
    search_document = models.GeneratedField(
        expression=SearchVector("name", config="english", weight="A")
        + SearchVector("description", config="english", weight="B"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    objects = ProductManager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(price__gte=0),
                name="catalog_product_price_gte_0",
                violation_error_message="Price must be greater than or equal to 0.",
            ),
            models.CheckConstraint(
                condition=models.Q(stock__gte=0),
                name="catalog_product_stock_gte_0",
                violation_error_message="Stock must be greater than or equal to 0.",
            ),
        ]
        indexes = [
            # A category's newest products (the default order of a list by
            # category) are its first entries; its count probe reads the index.
            models.Index(
                fields=["category", "is_active", "-created_at", "-id"],
                name="catalog_product_cat_new",
            ),
            models.Index(
                fields=["is_active", "-created_at", "-id"],
                name="catalog_product_active_new",
            ),
            models.Index(fields=["-created_at", "-id"], name="catalog_product_created"),
            # The dashboard's low-stock list: a short walk instead of a scan.
            models.Index(
                fields=["stock", "id"],
                condition=models.Q(is_active=True),
                name="catalog_product_low_stock",
            ),
            models.Index(fields=["price", "id"], name="catalog_product_price"),
            models.Index(fields=["name", "id"], name="catalog_product_name"),
            # Full-text search of name and description (GIN on the stored vector).
            GinIndex(fields=["search_document"], name="catalog_product_search"),
            # SKU prefix search and the admin's exact-SKU search, any case:
            # UPPER(sku) LIKE 'Q%' and UPPER(sku) = 'Q' are btree range scans.
            models.Index(
                OpClass(Upper("sku"), name="text_pattern_ops"),
                name="catalog_product_sku_upper",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Delete the product and refresh its cached reads once that commits.

        Bumped here rather than from a post_delete receiver: a model with no
        delete receivers and no dependents keeps Django's single-statement
        ``QuerySet.delete()``, which bumps once for all its rows.
        """
        pk = self.pk
        result = super().delete(*args, **kwargs)
        bump_on_commit(*product_writes(pks=[pk]), using=kwargs.get("using"))
        return result


class CategoryStats(models.Model):
    """A share of one category's dashboard sums, appended by database triggers.

    Every statement that writes products adds one row per category it
    changed (signed deltas; migration 0006 holds the triggers), and the
    triggers fold the rows now and then, so a category's figures are the sums
    of its rows: exact whatever the write path (ORM, COPY, raw SQL) and read
    in a few rows however many products there are.
    """

    category = models.ForeignKey(
        Category,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    products = models.BigIntegerField(default=0)
    active_products = models.BigIntegerField(default=0)
    # Active products with stock <= LOW_STOCK_THRESHOLD (catalog.analytics).
    low_stock_products = models.BigIntegerField(default=0)
    price_sum = models.DecimalField(max_digits=30, decimal_places=2, default=0)
    stock_value = models.DecimalField(max_digits=30, decimal_places=2, default=0)
    stock_units = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "category stats"

    def __str__(self) -> str:
        return f"category {self.category_id}: {self.products:+d} products"


class DayStats(models.Model):
    """A share of a day's new products or users, appended by database triggers."""

    class Subject(models.TextChoices):
        PRODUCTS = "products"
        USERS = "users"

    subject = models.CharField(max_length=8, choices=Subject.choices)
    # The UTC date of the rows' created_at.
    day = models.DateField()
    created = models.BigIntegerField(default=0)
    active = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "day stats"

    def __str__(self) -> str:
        return f"{self.subject} {self.day}: {self.created:+d}"
