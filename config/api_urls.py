from django.urls import include, path, re_path

from config.api.exceptions import not_found

app_name = "api"

urlpatterns = [
    path("", include("accounts.api.urls")),
    path("", include("catalog.api.urls")),
    # Last: any other path under the API prefix answers a JSON 404, not HTML.
    re_path(r"^.*$", not_found, name="not-found"),
]
