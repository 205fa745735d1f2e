from django.urls import include, path, re_path

from config.api.exceptions import not_found

app_name = "api"

urlpatterns = [
    # The catalog first: its reads are the hottest paths, and a resolver
    # tries patterns in order (no path is in both).
    path("", include("catalog.api.urls")),
    path("", include("accounts.api.urls")),
    # Last: any other path under the API prefix answers a JSON 404, not HTML.
    re_path(r"^.*$", not_found, name="not-found"),
]
