from django.conf import settings
from django.contrib import admin
from django.urls import include, path, reverse_lazy
from django.views.decorators.csp import csp_override
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from catalog.admin_dashboard import dashboard_view
from config import health
from config.metrics import metrics_view

# JSON under the API prefix, Django's HTML pages elsewhere.
handler400 = "config.api.exceptions.bad_request"
handler500 = "config.api.exceptions.server_error"

PAGE_METHODS = ["get", "head"]

admin.site.site_header = "Catalog administration"
admin.site.site_title = "Catalog admin"
# "View site": this service's site is its API; "/" is a 404.
admin.site.site_url = reverse_lazy("docs")

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    path(
        "admin/dashboard/",
        admin.site.admin_view(dashboard_view),
        name="admin-dashboard",
    ),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its init script from a URL, not inline, so the
    # CSP (script-src 'self') lets Swagger UI run. The HTML pages answer GET
    # and HEAD only: DRF's OPTIONS answer has no template to render into.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", http_method_names=PAGE_METHODS
        ),
        name="docs",
    ),
    # ReDoc builds its search index in a worker it starts from a blob: URL.
    path(
        "api/redoc/",
        csp_override({**settings.SECURE_CSP, "worker-src": ["'self'", "blob:"]})(
            SpectacularRedocView.as_view(
                url_name="schema", http_method_names=PAGE_METHODS
            )
        ),
        name="redoc",
    ),
    path(settings.API_PREFIX.strip("/") + "/", include("config.api_urls")),
]
