from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from accounts.models import User
from catalog.models import Category, Product

TEST_PASSWORD = "correct-horse-battery-staple"


class UserFactory(DjangoModelFactory[User]):
    email = factory.Sequence(lambda n: f"user{n}@example.com")
    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(TEST_PASSWORD)
    is_active = True

    class Meta:
        model = User
        skip_postgeneration_save = True

    class Params:
        staff = factory.Trait(is_staff=True)
        superuser = factory.Trait(is_staff=True, is_superuser=True)


class CategoryFactory(DjangoModelFactory[Category]):
    name = factory.Sequence(lambda n: f"Category {n}")
    slug = factory.Sequence(lambda n: f"category-{n}")

    class Meta:
        model = Category


class ProductFactory(DjangoModelFactory[Product]):
    sku = factory.Sequence(lambda n: f"SKU-{n:06d}")
    name = factory.Faker("catch_phrase")
    slug = factory.LazyAttribute(lambda o: o.sku.lower())
    description = factory.Faker("paragraph")
    price = factory.Faker(
        "pydecimal", left_digits=4, right_digits=2, positive=True, min_value=1
    )
    stock = factory.Faker("pyint", min_value=0, max_value=500)
    is_active = True
    category = factory.SubFactory(CategoryFactory)
    owner = factory.SubFactory(UserFactory)

    class Meta:
        model = Product

    class Params:
        out_of_stock = factory.Trait(stock=0)
        free = factory.Trait(price=Decimal("0.00"))
