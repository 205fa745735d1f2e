from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog.api.dashboard import DashboardView
from catalog.api.views import CategoryViewSet, ProductViewSet

router = SimpleRouter(trailing_slash=True)
router.register("categories", CategoryViewSet, basename="category")
router.register("products", ProductViewSet, basename="product")

urlpatterns = [
    *router.urls,
    path("analytics/dashboard/", DashboardView.as_view(), name="analytics-dashboard"),
]
