import re
from decimal import Decimal

import pytest
from django.urls import reverse

from tests.factories import CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db

URL = reverse("admin-dashboard")


@pytest.fixture
def catalog(db):
    garden = CategoryFactory(name="Garden")
    ProductFactory(category=garden, price=Decimal("12.50"), stock=2, sku="LOW-1")
    ProductFactory(category=garden, price=Decimal("7.50"), stock=40)
    CategoryFactory(name="Kitchen")


def test_staff_sees_tiles_and_svg_charts(admin_client, catalog):
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Analytics dashboard" in html
    # Two column charts of 30 days and two row charts of 2 categories.
    assert html.count("<svg viewBox") == 4
    assert len(re.findall(r'<rect class="bar[^"]*"', html)) == 30 + 30 + 2 + 2
    assert "Garden: 2" in html  # products per category, as an SVG tooltip
    assert "Garden: 325.00" in html  # stock value per category
    assert "LOW-1" in html  # low stock table
    assert "<script" not in html.split("</head>")[1]  # no inline scripts (CSP)
    assert "cdn" not in html.lower()


def test_plain_staff_member_may_open_it(client, staff_user, catalog):
    client.force_login(staff_user)
    assert client.get(URL).status_code == 200


def test_non_staff_and_anonymous_are_sent_to_login(client, user):
    assert client.get(URL)["Location"].startswith(reverse("admin:login"))
    client.force_login(user)
    assert client.get(URL)["Location"].startswith(reverse("admin:login"))


def test_admin_index_links_to_dashboard(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}"' in html


def test_second_view_reuses_cached_figures(
    admin_client, catalog, django_assert_max_num_queries
):
    admin_client.get(URL)
    # Session and user only: the aggregates come from the cache.
    with django_assert_max_num_queries(2):
        response = admin_client.get(URL)
    assert "Garden: 2" in response.content.decode()


def test_figures_follow_writes(
    admin_client, catalog, django_capture_on_commit_callbacks
):
    admin_client.get(URL)
    with django_capture_on_commit_callbacks(execute=True):
        ProductFactory(category=CategoryFactory(name="Garage"), stock=1, sku="G-1")
    html = admin_client.get(URL).content.decode()
    assert "Garage: 1" in html
    assert "G-1" in html
