"""The direct path for GET /v1/recommendations (serving.fast_route): it takes a request only when the
route's validation would pass it, and leaves everything else (errors included) to the route."""

from __future__ import annotations

import pytest

from serving.fast_route import api_key, parse_request

PATH = "/v1/recommendations/"


def parse(user: str, query: str = ""):
    return parse_request(PATH + user, query.encode("latin-1"), 100, 3)


def test_valid_requests_are_parsed_with_the_routes_defaults():
    assert parse("u1") == {
        "user_id": "u1",
        "k": 10,
        "category": None,
        "item_id": None,
        "exclude": frozenset(),
    }
    assert parse(
        "user@example.com/x:1", "k=100&category=music&item_id=i-5&page=home&exclude=a&exclude=b&utm=ignored"
    ) == {
        "user_id": "user@example.com/x:1",
        "k": 100,
        "category": "music",
        "item_id": "i-5",
        "exclude": frozenset({"a", "b"}),
    }
    assert parse("u1", "k=007")["k"] == 7
    assert parse("u" * 128)["user_id"] == "u" * 128


@pytest.mark.parametrize(
    "user, query",
    [
        ("", ""),
        ("u" * 129, ""),
        ("u 1", ""),
        ("u1\n", ""),
        ("ü", ""),  # the id itself
        ("u1", "k=0"),
        ("u1", "k=101"),
        ("u1", "k=-1"),
        ("u1", "k=ten"),
        ("u1", "k=1.0"),
        ("u1", "k= 5"),
        ("u1", "k="),
        ("u1", "k=5&k=6"),
        ("u1", "category=a&category=b"),  # repeated single values: the route decides
        ("u1", "category="),
        ("u1", "item_id=bad%20id"),
        ("u1", "page=%0A"),
        ("u1", "exclude=a&exclude=b&exclude=c&exclude=d"),
        ("u1", "exclude="),
    ],
)
def test_anything_doubtful_goes_to_the_route(user, query):
    assert parse(user, query) is None


def test_api_key_header_as_starlette_reads_it():
    assert api_key([(b"host", b"x"), (b"x-api-key", b"s3cret")]) == (True, "s3cret")
    assert api_key([(b"host", b"x")]) == (True, None)
    assert api_key([(b"x-api-key", b"a"), (b"x-api-key", b"b")]) == (False, None)
