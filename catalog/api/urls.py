from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog.api.dashboard import DashboardView

router = SimpleRouter(trailing_slash=True)

urlpatterns = [
    *router.urls,
    path(
        "analytics/dashboard/", DashboardView.as_view(), name="analytics-dashboard"
    ),
]
