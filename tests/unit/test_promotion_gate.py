"""The promotion gate decides on evidence: a seeded paired bootstrap of per-user holdout gains."""

import numpy as np
import pytest

from feature_store.settings import PromotionSettings
from spark_jobs.model_registry import GATE_SEED, NOT_ENOUGH_EVIDENCE, gate
from spark_jobs.significance import paired_bootstrap

RULE = PromotionSettings(metric="ndcg@10", min_gain=0.002, min_users=100)
# 200 users: the challenger finds something for 30 users the baseline missed, loses 10, ties 160
CHALLENGER = [0.5] * 30 + [0.0] * 10 + [0.2] * 160
BASELINE = [0.0] * 30 + [0.5] * 10 + [0.2] * 160


def oracle(challenger, baseline, resamples, confidence, seed):
    """The textbook percentile bootstrap in one draw (the product draws in blocks to bound memory)."""
    diff = np.asarray(challenger) - np.asarray(baseline)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return tuple(np.quantile(means, [tail, 1 - tail]))


def test_bootstrap_interval_of_a_small_paired_sample():
    got = paired_bootstrap(
        [0.3, 0.1, 0.0, 0.5, 0.25], [0.1, 0.2, 0.0, 0.25, 0.05], resamples=1000, confidence=0.95, seed=7
    )
    assert (got.users, got.resamples, got.confidence) == (5, 1000, 0.95)
    assert got.mean == pytest.approx(0.11)
    assert (got.low, got.high) == pytest.approx((-0.02, 0.22))


@pytest.mark.parametrize("resamples", [1000, 250, 99])
def test_block_draws_equal_the_one_draw_oracle(resamples):
    got = paired_bootstrap(CHALLENGER, BASELINE, resamples=resamples, confidence=0.9, seed=3)
    assert (got.low, got.high) == oracle(CHALLENGER, BASELINE, resamples, 0.9, 3)


def test_identical_models_have_a_zero_interval_and_no_users_no_interval():
    same = paired_bootstrap([0.5, 0.2, 0.9], [0.5, 0.2, 0.9])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    assert np.isnan(paired_bootstrap([], []).low)
    with pytest.raises(ValueError, match="one value per user"):
        paired_bootstrap([0.1, 0.2], [0.1])


def test_a_consistent_gain_over_enough_users_is_promoted():
    decision = gate(CHALLENGER, BASELINE, "popularity", RULE)
    assert decision.promote and decision.decision == "promoted"
    assert (decision.evidence.users, decision.evidence.mean) == (200, pytest.approx(0.05))
    assert (decision.evidence.low, decision.evidence.high) == pytest.approx((0.02, 0.0775))
    assert decision.evidence == paired_bootstrap(CHALLENGER, BASELINE, 1000, 0.95, GATE_SEED)
    assert (
        decision.reason
        == "promoted: ndcg@10 gain over popularity +0.0500, 95% CI [+0.0200, +0.0775] on 200 users, lower bound above 0.002"
    )
    assert decision.tags() == {
        "gate": decision.reason,
        "gate.decision": "promoted",
        "gate.users": "200",
        "gate.gain": repr(decision.evidence.mean),
        "gate.ci_low": repr(decision.evidence.low),
        "gate.ci_high": repr(decision.evidence.high),
    }


def test_a_mean_gain_above_the_margin_is_not_enough_when_the_interval_crosses_it():
    # the old rule (mean gain >= margin) would promote this: +0.01 on average, but half the users lose 0.58
    challenger = [0.6 if i % 2 == 0 else 0.0 for i in range(200)]
    baseline = [0.0 if i % 2 == 0 else 0.58 for i in range(200)]
    decision = gate(challenger, baseline, "champion v1", RULE)
    assert not decision.promote and decision.decision == NOT_ENOUGH_EVIDENCE
    assert decision.reason == (
        "not enough evidence: ndcg@10 gain over champion v1 +0.0100, 95% CI [-0.0785, +0.0867] on 200 users, lower bound not above 0.002"
    )


def test_too_few_users_is_not_enough_evidence_whatever_the_gain():
    decision = gate(CHALLENGER[:50], BASELINE[:50], "popularity", RULE)
    assert not decision.promote
    assert decision.reason.startswith(
        "not enough evidence: 50 holdout users, the gate needs 100 (ndcg@10 gain over popularity +0.2000"
    )
