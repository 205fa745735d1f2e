from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from catalog.api.fragments import product_fragments
from catalog.api.permissions import IsOwnerOrStaff, IsStaffOrReadOnly
from catalog.api.serializers import (
    BulkCreateResultSerializer,
    BulkDeleteResultSerializer,
    BulkDeleteSerializer,
    BulkUpdateResultSerializer,
    CategorySerializer,
    ProductBulkUpdateItemSerializer,
    ProductSerializer,
    ProductWriteSerializer,
    known_category,
    product_representation,
    product_row_representation,
    product_rows_representation,
)
from catalog.filtersets import DEFAULT_ORDERING, ProductFilterSet
from catalog.invalidation import (
    CATEGORY_READS,
    PRODUCT_LIST_READS,
    product_detail_reads,
)
from catalog.managers import API_VALUES
from catalog.models import Category, Product
from catalog.services import (
    CategoryInUse,
    category_create,
    category_delete,
    category_update,
    product_create,
    product_delete,
    product_update,
    products_bulk_create,
    products_bulk_delete,
    products_bulk_update,
)
from config.api.exceptions import Conflict
from config.api.mixins import (
    IF_MATCH_DESCRIPTION,
    ETagMixin,
    bulk_items,
    compute_etag,
)
from config.api.pagination import (
    KeysetCursorPagination,
    LimitOffsetOrCursorPagination,
)
from config.api.serializers import BulkErrorSerializer, ErrorSerializer
from config.cache.views import CachedViewMixin

IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description=IF_MATCH_DESCRIPTION,
)
ETAG_HEADER = OpenApiParameter(
    "ETag",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=True,
    description="Strong validator of this representation; send it back in If-Match.",
)
PRECONDITION_FAILED = OpenApiResponse(
    ErrorSerializer, description="If-Match names an older version; nothing changed."
)


@extend_schema_view(
    list=extend_schema(summary="List categories (public)"),
    retrieve=extend_schema(summary="Get a category (public)"),
    create=extend_schema(summary="Create a category (staff)"),
    update=extend_schema(summary="Replace a category (staff)"),
    partial_update=extend_schema(summary="Update a category (staff)"),
    destroy=extend_schema(
        summary="Delete a category (staff)",
        responses={
            204: None,
            409: OpenApiResponse(
                ErrorSerializer, description="The category still holds products."
            ),
        },
    ),
)
class CategoryViewSet(
    CachedViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Product categories: public read, staff write."""

    serializer_class = CategorySerializer
    permission_classes = [IsStaffOrReadOnly]
    cache_namespaces = CATEGORY_READS
    filter_backends: list = []

    def get_queryset(self) -> Any:
        return Category.objects.with_product_counts().order_by("name", "id")

    def perform_create(self, serializer: BaseSerializer) -> None:
        serializer.instance = category_create(**serializer.validated_data)
        serializer.instance.product_count = 0

    def perform_update(self, serializer: BaseSerializer) -> None:
        count = serializer.instance.product_count
        serializer.instance = category_update(
            category=serializer.instance, **serializer.validated_data
        )
        serializer.instance.product_count = count

    def perform_destroy(self, instance: Category) -> None:
        try:
            category_delete(category=instance)
        except CategoryInUse as exc:
            raise Conflict(str(exc)) from exc


@extend_schema_view(
    list=extend_schema(
        summary="List products (public)",
        description="Inactive products are listed for staff only. `count` is "
        "exact up to 1,000 matches and PostgreSQL's estimate beyond (never "
        "below what the page saw); `next` is exact either way. Send `cursor=` "
        "(empty) for keyset pages without a count, stable under inserts and "
        "fast at any depth.",
    ),
    retrieve=extend_schema(
        summary="Get a product (public; inactive ones for staff only)",
        parameters=[ETAG_HEADER],
    ),
    create=extend_schema(
        summary="Create a product (authenticated; you become its owner)",
        request=ProductWriteSerializer,
        responses={201: ProductSerializer},
    ),
    update=extend_schema(
        summary="Replace a product (owner or staff)",
        parameters=[IF_MATCH],
        request=ProductWriteSerializer,
        responses={200: ProductSerializer, 412: PRECONDITION_FAILED},
    ),
    partial_update=extend_schema(
        summary="Update some fields of a product (owner or staff)",
        parameters=[IF_MATCH],
        request=ProductWriteSerializer,
        responses={200: ProductSerializer, 412: PRECONDITION_FAILED},
    ),
    destroy=extend_schema(
        summary="Delete a product (owner or staff)",
        parameters=[IF_MATCH],
        responses={204: None, 412: PRECONDITION_FAILED},
    ),
)
class ProductViewSet(
    CachedViewMixin,
    ETagMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Products: public read, owner-or-staff write, staff bulk writes."""

    # Writes load their caller from PostgreSQL, not the user memo: a
    # deactivation whose bump Redis missed must stop them at once (the memo
    # would trust the old "users" version until this worker's ledger poll).
    permission_classes = [permissions.IsAuthenticatedOrReadOnly, IsOwnerOrStaff]
    filterset_class = ProductFilterSet
    pagination_class = LimitOffsetOrCursorPagination
    # Products embed their category and owner; staff also see inactive ones.
    cache_namespaces = PRODUCT_LIST_READS
    cache_vary = "staff"

    def cache_dependencies(self, request: Request) -> tuple[str, ...]:
        if self.action == "retrieve":
            return product_detail_reads(self.kwargs.get(self.lookup_field))
        return self.cache_namespaces

    def cache_single_flight(self, request: Request) -> bool:
        # One product, or a page of a list read on an index (the SQL compiled
        # once, see list()): cheaper to compute twice than to lock, which
        # costs two more Redis round trips on every miss, and under writes
        # every list read misses. A search ranks its candidates: worth one
        # computation for all concurrent misses.
        return self.action == "list" and "search" in request.query_params

    def get_queryset(self) -> Any:
        return Product.objects.for_api().visible_to(self.request.user)

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action in ("create", "update", "partial_update"):
            return ProductWriteSerializer
        return ProductSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if KeysetCursorPagination.cursor_query_param in request.query_params:
            return super().list(request, *args, **kwargs)  # keyed on instances

        def offset_pages() -> QuerySet:
            # Offset pages count and skip rows of the product table alone (no
            # joins); page_rows then reads the page's flat values.
            queryset = self.filter_queryset(self.get_queryset())
            return queryset.select_related(None).values("pk")

        key = self.list_key(request)
        renderer = request.accepted_renderer
        if key is not None and (
            isinstance(renderer, JSONRenderer)
            and request.accepted_media_type == renderer.media_type
        ):
            # The page's ids (and count), then its items from their cached
            # fragments: a page invalidated by an insert ahead of it costs
            # the database only its ids and the items that changed.
            ids = self.paginator.paginate_prepared(
                ("ids", key), offset_pages, request, self, page_rows=lambda page: page
            )
            if ids is not None:
                items = product_fragments.get([pk for (pk,) in ids])
                return self.paginator.get_paginated_json(items, renderer)
        if key is None:
            rows = self.paginate_queryset(offset_pages())
        else:
            rows = self.paginator.paginate_prepared(key, offset_pages, request, self)
        return self.get_paginated_response(product_rows_representation(rows))

    def list_key(self, request: Request) -> tuple | None:
        """Return what the SQL of this list depends on (None: compile it anew).

        Who asks (staff see inactive products) and the filters sent; nothing
        else in the query string reaches the SQL. Searches are compiled per
        request (see PreparedList).
        """
        params = request.query_params
        if "search" in params:
            return None
        filters = tuple(
            (name, tuple(params.getlist(name)))
            for name in ProductFilterSet.base_filters
            if name in params
        )
        return (self.cache_audience(request), filters)

    def page_rows(self, page: QuerySet) -> QuerySet:
        """Return the API values of the products of one offset *page*.

        A deferred join: PostgreSQL skips an offset's rows on the ordering's
        index and joins categories and owners to the page's rows only, where
        one query with the joins would join every skipped row too.
        """
        if page.query.annotations:
            # Ordered by expressions (a search): they exist in the page's
            # query only, so it reads the values itself.
            return page.values_list(*API_VALUES)
        rows = Product.objects.filter(pk__in=page)
        if page.query.order_by:
            rows = rows.order_by(*page.query.order_by)
        return rows.values_list(*API_VALUES)

    def filter_queryset(self, queryset: Any) -> Any:
        if self.action == "list" and self.request.query_params.keys().isdisjoint(
            ProductFilterSet.base_filters
        ):
            # What the FilterSet does without a filter, without building one.
            return queryset.order_by(*DEFAULT_ORDERING)
        return super().filter_queryset(queryset)

    def representation(self, instance: Product) -> Any:
        return product_representation(instance)

    def retrieve_representation(self) -> Any:
        # Reads of a product are open to all who may see it (the object
        # permissions only guard writes): no instance to check, one row.
        user = self.request.user
        row = Product.objects.api_row(self.product_pk(), active_only=not user.is_staff)
        if row is None:
            raise Http404
        return product_row_representation(row)

    def get_object(self) -> Any:
        if self.action not in ("update", "partial_update", "destroy"):
            return super().get_object()
        # A write (ETagMixin runs it in a transaction) locks and reads the
        # product's own row, compiled once; the category and owner its answer
        # shows come from the memos, as for the caller and a new category.
        user = self.request.user
        product = Product.objects.locked_for_write(
            self.product_pk(), active_only=not user.is_staff
        )
        if product is None:
            raise Http404
        self.check_object_permissions(self.request, product)
        category = known_category(product.category_id)
        if category is not None:
            product.category = category
        if product.owner_id == user.pk:
            product.owner = user
        return product

    def product_pk(self) -> int:
        """Return the product id of the URL (404 unless 1-18 ASCII digits)."""
        pk = self.kwargs[self.lookup_field]
        if not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
            raise Http404
        return int(pk)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        data = self.representation(serializer.instance)
        headers = {
            "ETag": compute_etag(data),
            "Location": reverse("api:product-detail", args=[serializer.instance.pk]),
        }
        return Response(data, status=status.HTTP_201_CREATED, headers=headers)

    def perform_create(self, serializer: BaseSerializer) -> None:
        serializer.instance = product_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer: BaseSerializer) -> None:
        serializer.instance = product_update(
            product=serializer.instance, **serializer.validated_data
        )

    def perform_destroy(self, instance: Product) -> None:
        product_delete(product=instance)

    @extend_schema(
        methods=["POST"],
        summary="Create up to 1,000 products in one statement (staff)",
        description="A bare JSON array of products. All or nothing: any invalid "
        "item, repeated or taken SKU or unknown category rejects the whole "
        "request with `{index, errors}` per bad item.",
        request=ProductWriteSerializer(many=True),
        responses={201: BulkCreateResultSerializer, 400: BulkErrorSerializer},
    )
    @extend_schema(
        methods=["PATCH"],
        summary="Update up to 1,000 products by id in one statement (staff)",
        description="A bare JSON array of `{id, ...fields}`; each item writes only "
        "the fields it sends. All or nothing, as for create; unknown or repeated "
        "ids are item errors.",
        request=ProductBulkUpdateItemSerializer(many=True),
        responses={200: BulkUpdateResultSerializer, 400: BulkErrorSerializer},
    )
    @extend_schema(
        methods=["DELETE"],
        summary="Delete up to 1,000 products by id in one statement (staff)",
        description="All or nothing: an unknown or repeated id rejects the request.",
        request=BulkDeleteSerializer,
        responses={200: BulkDeleteResultSerializer, 400: BulkErrorSerializer},
    )
    @action(
        detail=False,
        methods=["post", "patch", "delete"],
        url_path="bulk",
        permission_classes=[permissions.IsAdminUser],
        filterset_class=None,
        pagination_class=None,
    )
    def bulk(self, request: Request) -> Response:
        # Services raise ItemErrors; the API's exception handler answers 400.
        if request.method == "POST":
            ids = products_bulk_create(
                owner=request.user, items=bulk_items(request.data)
            )
            return Response(
                {"created": len(ids), "ids": ids}, status=status.HTTP_201_CREATED
            )
        if request.method == "PATCH":
            updated = products_bulk_update(items=bulk_items(request.data))
            return Response({"updated": updated})
        deleted = products_bulk_delete(ids=bulk_items(request.data, key="ids"))
        return Response({"deleted": deleted})
