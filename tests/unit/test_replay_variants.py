"""Serving variants of a replay (ablations asked the same questions): parsing and settings."""

from __future__ import annotations

import pytest

from feature_store.settings import Settings
from lambdarec.replay.runner import ServingVariant


def test_variant_parses_name_store_and_settings():
    variant = ServingVariant.parse("priors_only:speed:serving_use_ranker=false,serving_recent_items=5")
    assert variant == ServingVariant(
        "priors_only", "speed", (("serving_use_ranker", "false"), ("serving_recent_items", "5"))
    )
    settings = variant.settings(Settings(serving_use_ranker=True, max_k=7))
    assert (settings.serving.use_ranker, settings.serving.recent_items, settings.serving.max_k) == (
        False,
        5,
        7,
    )
    assert ServingVariant.parse("plain:batch:") == ServingVariant("plain", "batch", ())


@pytest.mark.parametrize(
    "text",
    ["x:nowhere:max_k=3", "x:speed:no_such_setting=1", "x:speed:max_k", "batch_only:speed:max_k=3", "x"],
)
def test_bad_variants_say_what_is_expected(text):
    with pytest.raises(ValueError, match="variant"):
        ServingVariant.parse(text)


def test_every_model_is_asked_to_exclude_the_newest_replayed_items():
    from lambdarec.replay.runner import newest_exclusions

    consumed = dict.fromkeys(["a", "b", "c", "d"])
    assert newest_exclusions(consumed, 3) == ["b", "c", "d"]
    assert newest_exclusions(consumed, 10) == ["a", "b", "c", "d"]
    assert newest_exclusions({}, 3) == [] and newest_exclusions(consumed, 0) == []
