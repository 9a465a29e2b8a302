"""The ranker contract between the batch layer (training, batch scoring) and serving.

- `RANKER_FEATURES` is the ordered input vector of every ranker. Training (spark_jobs) builds it from
  gold features and candidate scores as of a cut-off; serving builds it from the same gold features
  (published to Redis) and the request's candidates. Same names, same order, same missing-value rule
  (NaN, which XGBoost, LightGBM and their ONNX graphs treat as missing).
- Models are registered in MLflow under `Settings.ranker.model_name` (one registered model per role),
  with aliases `champion` and `challenger`. Each version's MLflow model directory holds the files in
  `ModelFiles` so serving can run ONNX (or the native booster) without importing training code.
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.genres import GENRE_INPUTS
from feature_store.realtime import REALTIME_INPUTS

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

# The highest label grade a training example carries: LightGBM's lambdarank accepts labels below
# len(label_gain) (31 by default); purchase weight 8 fits.
MAX_RELEVANCE = 10

USER_INPUTS: tuple[str, ...] = (
    "user_events_7d",
    "user_events_30d",
    "user_lifetime_events",
    "user_distinct_items_30d",
    "user_recency_s",
    "user_avg_rating",
    "user_rating_count",
)
ITEM_INPUTS: tuple[str, ...] = (
    "item_events_7d",
    "item_events_30d",
    "item_users_30d",
    "item_weight_30d",
    "item_ctr_30d",
    "item_purchase_rate_30d",
    "item_trend_7d",
    "item_age_days",
    "item_lifetime_events",
    "item_avg_rating",
    "item_rating_count",
)
# user x item: the user's affinity (decayed share of weight) for the item's main category before the
# cut-off, then how the item's genres match the user's long-term genre profile (feature_store.genres).
CROSS_INPUTS: tuple[str, ...] = ("ui_category_affinity", *GENRE_INPUTS)
# Per nightly candidate source, 1 / the item's rank in that source's list for the user (missing when the
# source did not propose it). A rank, not the source's raw score: raw scores change scale with the history
# a source was fitted on (the evaluation's inner split vs the whole history, one night vs the next), so a
# ranker trained on one scale mis-reads the other; measured in benchmarks/REPORT.md (issue 18). Computed
# once (`spark_jobs.training_set.candidate_scores`); serving reads the same values from the published
# recommendations (`publish.encode_user_recs`).
CANDIDATE_SOURCES: tuple[str, ...] = ("als", "covisit", "popular", "ease")
CANDIDATE_INPUTS: tuple[str, ...] = tuple(f"cand_{s}" for s in CANDIDATE_SOURCES)
# Then how item-to-item models that propose nothing see the whole pool the sources proposed: EASE at
# three regularisations and RP3beta (spark_jobs.candidates.POOL_SCORER_MODELS), each as the item's score
# relative to the user's best in the pool (`_score`) and 1 / its rank there (`_rank`). A source's own
# list leaves most of the pool without its view; an offline study measured these views, with genre
# taste, as the ranker's gain over its best input (benchmarks/REPORT.md, issue 18). Stored in
# gold/candidates as rows whose `source` is the scorer (never a proposer: not in recall, fusion or a
# candidate's `sources`).
POOL_SCORERS: tuple[str, ...] = ("ease100", "ease500", "ease2000", "rp3beta")
POOL_VIEWS: tuple[str, ...] = ("score", "rank")


def pool_input(scorer: str, view: str) -> str:
    return f"pool_{scorer}_{view}"


POOL_INPUTS: tuple[str, ...] = tuple(pool_input(s, view) for s in POOL_SCORERS for view in POOL_VIEWS)
# Every nightly input of a candidate. Published per user: the sources' in the recs entries, the pool
# scorers' as one float32 row per rec (RedisKeys.user_pool_inputs: 4 bytes a value, decoded in one go).
NIGHTLY_INPUTS: tuple[str, ...] = CANDIDATE_INPUTS + POOL_INPUTS

# Then the real-time inputs at the moment of the request (feature_store.realtime).
RANKER_FEATURES: tuple[str, ...] = USER_INPUTS + ITEM_INPUTS + CROSS_INPUTS + NIGHTLY_INPUTS + REALTIME_INPUTS


@dataclass(frozen=True)
class ModelFiles:
    """Paths inside a registered model version's MLflow model directory (relative)."""

    meta: str = "artifacts/ranker_meta.json"  # {"kind", "features", "onnx_output", "metrics", ...}
    onnx: str = "artifacts/model.onnx"  # full model, converted with onnxmltools
    onnx_compressed: str = "artifacts/model_compressed.onnx"  # compressed variant (see its meta entry)
    native: str = "artifacts/native_model"  # xgboost JSON or LightGBM text model


MODEL_FILES = ModelFiles()
