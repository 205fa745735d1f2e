"""Content negotiation remembers DRF's answers and never changes them."""

import pytest
from django.urls import reverse
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

import config.api.negotiation
from config.api.negotiation import RememberingContentNegotiation

CASES = [
    ("*/*", None, ""),
    ("application/json", None, ""),
    ("application/json; indent=4", None, ""),
    ("text/html", None, ""),
    ("text/html;q=0.5, application/json", None, ""),
    ("*/*", "api", ""),
    ("*/*", None, "format=api"),
    ("application/json", None, "x=1&format=json"),
]


@pytest.fixture(autouse=True)
def _empty_memo(monkeypatch):
    monkeypatch.setattr(RememberingContentNegotiation, "_remembered", {})


def negotiate(negotiation, accept, suffix, query):
    request = Request(APIRequestFactory().get(f"/x/?{query}", HTTP_ACCEPT=accept))
    renderers = [JSONRenderer(), BrowsableAPIRenderer()]
    renderer, media_type = negotiation.select_renderer(request, renderers, suffix)
    assert any(renderer is r for r in renderers)  # this request's own instance
    return type(renderer), media_type


@pytest.mark.parametrize(("accept", "suffix", "query"), CASES)
def test_remembered_answers_are_drf_answers(accept, suffix, query):
    expected = negotiate(DefaultContentNegotiation(), accept, suffix, query)
    remembering = RememberingContentNegotiation()
    assert negotiate(remembering, accept, suffix, query) == expected
    assert len(RememberingContentNegotiation._remembered) == 1
    assert negotiate(remembering, accept, suffix, query) == expected  # remembered


def test_the_same_accept_with_other_formats_is_told_apart():
    remembering = RememberingContentNegotiation()
    assert negotiate(remembering, "*/*", None, "")[0] is JSONRenderer
    assert negotiate(remembering, "*/*", None, "format=api")[0] is BrowsableAPIRenderer
    assert negotiate(remembering, "*/*", "api", "")[0] is BrowsableAPIRenderer


def test_refusals_are_not_remembered():
    remembering = RememberingContentNegotiation()
    for _ in range(2):
        with pytest.raises(NotAcceptable):
            negotiate(remembering, "application/xml", None, "")
    assert RememberingContentNegotiation._remembered == {}


def test_the_memo_is_bounded_and_keeps_working(monkeypatch):
    monkeypatch.setattr(config.api.negotiation, "MAX_REMEMBERED", 3)
    remembering = RememberingContentNegotiation()
    for i in range(10):
        accept = f"application/json; v={i}"
        assert negotiate(remembering, accept, None, "")[1] == accept
        assert len(RememberingContentNegotiation._remembered) <= 3
    key = next(iter(RememberingContentNegotiation._remembered))
    assert key[0][0] == (JSONRenderer, "application/json", "json")


def test_renderers_differing_only_by_instance_settings_are_told_apart():
    accept = "application/hal+json, */*;q=0.1"
    remembering = RememberingContentNegotiation()

    def select(renderer):
        request = Request(APIRequestFactory().get("/x/", HTTP_ACCEPT=accept))
        return remembering.select_renderer(request, [renderer])[1]

    hal = JSONRenderer()
    hal.media_type = "application/hal+json"
    assert select(JSONRenderer()) == "application/json;q=0.1"
    assert select(hal) == "application/hal+json"


@pytest.mark.django_db
def test_api_answers_406_and_404_for_what_it_cannot_render(api_client):
    url = reverse("api:product-list")
    for _ in range(2):
        response = api_client.get(url, HTTP_ACCEPT="application/xml")
        assert response.status_code == 406
        assert "detail" in response.json()
    assert api_client.get(url, {"format": "xml"}).status_code == 404
    assert api_client.get(url, {"format": "json"}).status_code == 200
    assert api_client.get(url, HTTP_ACCEPT="application/json").status_code == 200
