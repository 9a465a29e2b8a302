"""feature_store.genres: the one definition of genre taste that Spark and serving are compared with."""

import math

import pytest

from feature_store.genres import genre_inputs, genre_profile, item_genres


def test_an_items_genres_are_its_distinct_categories_else_its_main_category():
    assert item_genres(["Comedy", "Drama", "Comedy"], "Comedy") == ("Comedy", "Drama")
    assert item_genres([], "Drama") == ("Drama",)
    assert item_genres(None, None) == ()


def test_a_profile_shares_the_weight_of_every_genre_of_each_item():
    # 3 on a comedy-drama, 2 on a drama, 1 on a horror film later weighed to 0
    profile = genre_profile([(("Comedy", "Drama"), 3.0), (("Drama",), 2.0), (("Horror",), 0.0)])
    assert profile == {"Comedy": 0.375, "Drama": 0.625}
    assert genre_profile([(("Horror",), 0.0)]) == {}


def test_inputs_of_a_candidate_against_a_profile():
    profile = {"Comedy": 0.375, "Drama": 0.625}
    cosine, top, mean = genre_inputs(profile, ("Drama", "War"))
    assert cosine == pytest.approx(0.625 / (math.sqrt(0.375**2 + 0.625**2) * math.sqrt(2)), rel=1e-12)
    assert (top, mean) == (0.625, 0.3125)
    assert genre_inputs(profile, ("War",)) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in genre_inputs(profile, ()) + genre_inputs({}, ("Drama",)))
