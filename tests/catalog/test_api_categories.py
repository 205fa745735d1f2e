import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from catalog.models import Category
from catalog.services import category_create
from config import counting
from tests.factories import CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db

LIST = reverse("api:category-list")


def detail(category: Category) -> str:
    return reverse("api:category-detail", args=[category.pk])


def test_list_is_public_with_active_product_counts(api_client):
    tools = CategoryFactory(name="Tools")
    empty = CategoryFactory(name="Empty")
    ProductFactory.create_batch(2, category=tools)
    ProductFactory(category=tools, is_active=False)
    response = api_client.get(LIST)
    assert response.status_code == 200
    counts = {c["id"]: c["product_count"] for c in response.json()["results"]}
    assert counts == {tools.pk: 2, empty.pk: 0}


@pytest.mark.parametrize("size", [1, 100])
def test_list_runs_constant_queries(api_client, django_assert_num_queries, size):
    # One more row than the largest page, so that neither page is the last.
    for category in CategoryFactory.create_batch(101):
        ProductFactory(category=category)
    # The page, then the count: the table's row estimate, too small to
    # trust, so the exact count of a small table (one statement).
    with django_assert_num_queries(2):
        response = api_client.get(LIST, {"limit": size})
    assert len(response.json()["results"]) == size
    assert response.json()["count"] == 101


def test_detail_is_public(api_client):
    category = CategoryFactory(slug="garden")
    ProductFactory(category=category)
    body = api_client.get(detail(category)).json()
    assert body["slug"] == "garden"
    assert body["product_count"] == 1


@pytest.mark.parametrize(("who", "expected"), [("anonymous", 401), ("user", 403)])
def test_writes_are_staff_only(api_client, auth_client, user, who, expected):
    category = CategoryFactory(name="Keep")
    client = api_client if who == "anonymous" else auth_client(user)
    assert client.post(LIST, {"name": "New"}, format="json").status_code == expected
    response = client.patch(detail(category), {"name": "Changed"}, format="json")
    assert response.status_code == expected
    assert client.delete(detail(category)).status_code == expected
    assert list(Category.objects.values_list("name", flat=True)) == ["Keep"]


def test_staff_creates_with_slug_derived_from_name(auth_client, staff_user):
    response = auth_client(staff_user).post(
        LIST, {"name": "Garden Tools"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "garden-tools"
    assert response.json()["product_count"] == 0


def test_taken_name_is_400_on_name_not_on_the_unsent_slug(auth_client, staff_user):
    CategoryFactory(name="Garden", slug="garden")
    response = auth_client(staff_user).post(LIST, {"name": "garden"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "name": [
            "A category with this name already exists (slug 'garden'); "
            "choose another name or send a slug."
        ]
    }
    assert Category.objects.count() == 1


def test_name_without_letters_or_digits_is_400_on_name(auth_client, staff_user):
    response = auth_client(staff_user).post(LIST, {"name": "!!!"}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["name"]


def test_duplicate_slug_is_400_on_slug(auth_client, staff_user):
    CategoryFactory(slug="garden")
    response = auth_client(staff_user).post(
        LIST, {"name": "Garden", "slug": "garden"}, format="json"
    )
    assert response.status_code == 400
    assert "slug" in response.json()
    assert Category.objects.count() == 1


def test_staff_renames(auth_client, staff_user):
    category = CategoryFactory(name="Old")
    ProductFactory(category=category)
    response = auth_client(staff_user).patch(
        detail(category), {"name": "New"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["name"] == "New"
    assert response.json()["product_count"] == 1


def test_deleting_a_category_with_products_is_409(auth_client, staff_user):
    category = CategoryFactory()
    ProductFactory(category=category, is_active=False)
    response = auth_client(staff_user).delete(detail(category))
    assert response.status_code == 409
    assert "products" in response.json()["detail"]
    assert Category.objects.filter(pk=category.pk).exists()


def test_deleting_an_empty_category_is_204(auth_client, staff_user):
    category = CategoryFactory()
    assert auth_client(staff_user).delete(detail(category)).status_code == 204
    assert not Category.objects.exists()


def test_product_counts_are_exact_up_to_the_cap_then_estimated(api_client, monkeypatch):
    monkeypatch.setattr(counting, "COUNT_EXACT_UP_TO", 2)
    big, small = CategoryFactory(), CategoryFactory()
    ProductFactory.create_batch(5, category=big)
    ProductFactory(category=small)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_product")
    ProductFactory.create_batch(3, category=big)  # unseen by the statistics
    counts = {
        c["id"]: c["product_count"] for c in api_client.get(LIST).json()["results"]
    }
    # Past the cap the planner statistics answer: 5 of the 6 rows analysed.
    assert counts == {big.pk: 5, small.pk: 1}


def test_a_slug_taken_after_the_serializer_check_is_a_field_error():
    CategoryFactory(slug="garden")
    with pytest.raises(ValidationError) as taken:
        category_create(name="Garden", slug="garden")
    assert taken.value.message_dict == {
        "slug": ["category with this slug already exists."]
    }
    with pytest.raises(ValidationError) as taken:
        category_create(name="Garden")
    assert list(taken.value.message_dict) == ["name"]
