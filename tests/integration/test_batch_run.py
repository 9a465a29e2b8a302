"""End-to-end `lambdarec batch run` on a small generated data set: generate -> ingest -> every batch
step -> a champion in MLflow and the batch's recommendations in Redis, readable through the pointer;
then `lambdarec batch step` and `python -m lambdarec.batch_task` (the DAG's entry) on the same state.
The commands run in-process, so they share the test run's Spark session; the nightly itself is the
run's shared one (`local_nightly`, tests/nightly.py), which the cluster test compares with."""

import math
import re

import pytest
from pyspark.sql import functions as F
from typer.testing import CliRunner

from feature_store.codecs import decode_feature_rows, decode_recs
from feature_store.nightly import step_names
from feature_store.ranking import (
    CANDIDATE_SOURCES,
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    POOL_INPUTS,
    POOL_SCORERS,
    POOL_VIEWS,
)
from feature_store.redis_keys import RedisKeys
from feature_store.registry import champion_version
from feature_store.settings import load_settings
from feature_store.tables import BATCH_SCORES, CANDIDATES, TRAINING_SET
from lambdarec import batch_task
from lambdarec.cli import build_app
from lambdarec.promotion import FORCED_REASON_TAG, PromotionRejected, promote_version, validate_version
from lambdarec.testing import settings_environment, spark_cache_is_empty
from spark_jobs.als_tuning import GRID_KEYS, choose_best
from spark_jobs.batch_pipeline import STEPS, run_step
from spark_jobs.delta_io import read_table
from spark_jobs.model_registry import client, evaluation_per_user
from spark_jobs.request_examples import QUERY_SEPARATOR, WITHOUT_SPEED
from spark_jobs.steps.context import BatchContext
from tests.nightly import RUN_DATE

# the heaviest test of the suite (every batch step on real Spark, Delta, MLflow and Redis): ~4 minutes
# on 2 idle cores, more on a shared machine
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]


@pytest.mark.long
def test_batch_run_ends_with_a_champion_and_recommendations_in_redis(
    spark, local_nightly, nightly_redis, monkeypatch, capsys
):
    batch_settings, reports, redis_client = local_nightly.settings, local_nightly.reports, nightly_redis
    for name, value in settings_environment(batch_settings).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == batch_settings
    assert list(reports) == list(STEPS) == list(step_names())
    printed = [
        m.group(1) for line in local_nightly.output.splitlines() if (m := re.match(r"^  (\w+): ", line))
    ]
    assert printed == list(step_names())
    runner, app = CliRunner(), build_app()

    # MLflow: both rankers registered for this date, the better one challenger and (past popularity) champion.
    mlflow_client = client(batch_settings)
    name = batch_settings.ranker.model_name
    versions = {reports["train_xgboost"]["version"], reports["train_lightgbm"]["version"]}
    assert versions == {"1", "2"}
    assert reports["promote"]["promoted"], reports["promote"]
    champion = champion_version(batch_settings)
    assert champion == reports["promote"]["version"] and champion in versions
    assert str(mlflow_client.get_model_version_by_alias(name, CHALLENGER_ALIAS).version) == champion
    results = reports["evaluate"]["results"]
    assert {"popular", "als", "covisit", "blend", "xgboost v1", "lightgbm v2"} <= set(results)
    # The gate decided on evidence: the paired per-user gains over popularity, from the evaluate run's
    # per-user table, whose means are the reported metrics.
    promote = reports["promote"]
    assert promote["decision"] == "promoted", promote
    cut = BatchContext(spark, batch_settings, RUN_DATE).cutoffs
    per_user = evaluation_per_user(batch_settings, RUN_DATE, cut.holdout)
    labels = {"popular": "popular", "v1": "xgboost v1", "v2": "lightgbm v2"}
    assert (
        len(per_user)
        == results["popular"]["users"]
        == promote["evidence"]["users"]
        >= batch_settings.promotion.min_users
    )
    for column, label in labels.items():
        assert per_user[column].mean() == pytest.approx(results[label]["ndcg@10"], abs=1e-12)
    gains = per_user[f"v{champion}"] - per_user["popular"]
    assert promote["evidence"]["mean"] == pytest.approx(gains.mean(), abs=1e-12)
    assert promote["evidence"]["low"] > batch_settings.promotion.min_gain
    tags = mlflow_client.get_model_version(name, champion).tags
    assert (tags["gate.decision"], tags["gate.users"]) == ("promoted", str(promote["evidence"]["users"]))

    # Delta: every cut-off's candidates, the training set, and batch scores by the champion.
    as_ofs = {
        (r.as_of, r.source)
        for r in read_table(spark, batch_settings, CANDIDATES).select("as_of", "source").distinct().collect()
    }
    assert as_ofs == {
        (d, s) for d in (cut.train, cut.holdout, cut.serve) for s in (*CANDIDATE_SOURCES, *POOL_SCORERS)
    }
    tuning = reports["candidates"]["als_tuning"]
    assert [
        (row["als_rank"], row["als_reg_param"], row["als_alpha"], row["als_max_iter"]) for row in tuning
    ] == [(8, 0.05, 10.0, 5), (8, 0.05, 40.0, 5)]
    best = choose_best(tuning, batch_settings.candidates.als_tune_metric)
    assert reports["candidates"]["als"] == {key: best[key] for key in GRID_KEYS}
    written = read_table(spark, batch_settings, CANDIDATES).groupBy("as_of", "source").count().collect()
    assert {(str(r.as_of), r.source): r["count"] for r in written} == {
        (d, s): n for d, per_source in reports["candidates"]["rows"].items() for s, n in per_source.items()
    }
    assert set(reports["candidates"]["recall"]) == {str(cut.train), str(cut.holdout)}
    assert set(reports["candidates"]["recall"][str(cut.holdout)]) == {
        f"{s}@{n}" for s in (*CANDIDATE_SOURCES, "union") for n in (50, 100, 200)
    } | {"users"}
    training = read_table(spark, batch_settings, TRAINING_SET)
    assert {r.as_of for r in training.select("as_of").distinct().collect()} == {cut.train}
    # every nightly also asks some moments as serving is without the speed layer (request_examples)
    queries = [r.user_id for r in training.select("user_id").distinct().collect()]
    blind = [q for q in queries if q.endswith(QUERY_SEPARATOR + WITHOUT_SPEED)]
    assert 0 < len(blind) < len(queries)
    scores = read_table(spark, batch_settings, BATCH_SCORES).collect()
    assert {(r.as_of, r.model_version) for r in scores} == {(RUN_DATE, champion)}
    assert max(r["rank"] for r in scores) == batch_settings.batch.top_n

    # Redis: the pointer names a version whose meta says champion and whose recs are the batch scores.
    keys = RedisKeys(batch_settings.redis.key_prefix)
    version = redis_client.get(keys.batch_pointer).decode()
    assert version == reports["publish"]["version"]
    meta = redis_client.hgetall(keys.batch_meta(version))
    assert (meta[b"as_of"].decode(), meta[b"model_version"].decode()) == (str(RUN_DATE), champion)
    user = scores[0].user_id
    expected = sorted((r for r in scores if r.user_id == user), key=lambda r: r["rank"])
    published = decode_recs(redis_client.get(keys.user_recs(version, user)))
    assert [(i.item_id, i.score) for i in published if i.source == "batch"] == [
        (r.item_id, r.score) for r in expected
    ]
    # then each nightly source's input of those items (the ranker's cand_<source>: 1 / the source's rank)
    rows = (
        read_table(spark, batch_settings, CANDIDATES)
        .where((F.col("as_of") == F.lit(RUN_DATE)) & (F.col("user_id") == user))
        .collect()
    )
    nightly = {(r.item_id, r.source): 1.0 / r["rank"] for r in rows if r.source in CANDIDATE_SOURCES}
    assert {(i.item_id, i.source): i.score for i in published if i.source != "batch"} == {
        key: score for key, score in nightly.items() if key[0] in {r.item_id for r in expected}
    }
    # and the pool scorers' inputs, one row per rec in the same order (NaN: the scorer did not index it)
    scored = {(r.item_id, r.source): r for r in rows if r.source in POOL_SCORERS}
    pool = decode_feature_rows(redis_client.get(keys.user_pool_inputs(version, user)), len(POOL_INPUTS))

    def pool_value(row, view: str) -> float | None:
        return None if row is None else row.score if view == "score" else 1.0 / row["rank"]

    want = [
        [pool_value(scored.get((item.item_id, s)), view) for s in POOL_SCORERS for view in POOL_VIEWS]
        for item in expected
    ]
    assert any(v is not None for row in want for v in row)
    assert [
        [None if math.isnan(v) else pytest.approx(v, rel=1e-6) for v in row] for row in pool.tolist()
    ] == want
    assert int(meta[b"count_recs"]) == len({r.user_id for r in scores})

    # Restartable: rerunning a training step for the same date registers nothing new.
    rerun = runner.invoke(
        app, ["batch", "step", "train_xgboost", "--date", str(RUN_DATE)], env={"COLUMNS": "250"}
    )
    assert rerun.exit_code == 0, rerun.output
    summary = [line for line in rerun.output.splitlines() if line.startswith("train_xgboost ")]
    assert len(summary) == 1 and summary[0].startswith(
        f"train_xgboost {RUN_DATE}: kind=xgboost, version={reports['train_xgboost']['version']}, skipped=already registered for this run date, seconds="
    ), rerun.output
    assert str(mlflow_client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == champion

    # The DAG's spark-submit entry: one step by name; the only batch version is the one just published.
    capsys.readouterr()
    batch_task.main(["expire", "--date", str(RUN_DATE)])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("{'expired': [], 'seconds': ") and printed.endswith("}")

    # What lambdarec_promote's tasks do on the registry the nightly left: the other ranker is judged on
    # the run's holdout; forcing it moves `champion` and records the reason in MLflow.
    other = next(v for v in versions if v != champion)
    check = validate_version(spark, batch_settings, other).as_dict()
    assert (check["version"], check["champion"], check["metric"], check["holdout_as_of"]) == (
        other,
        champion,
        batch_settings.promotion.metric,
        str(cut.holdout),
    )
    # the same holdout and models as the evaluate step: the same metrics
    assert check["candidate_score"] == pytest.approx(results[labels[f"v{other}"]]["ndcg@10"], abs=1e-12)
    assert check["champion_score"] == pytest.approx(results[labels[f"v{champion}"]]["ndcg@10"], abs=1e-12)
    if not check["passed"]:
        with pytest.raises(PromotionRejected):
            promote_version(batch_settings, check)
        assert champion_version(batch_settings) == champion
    message = promote_version(
        batch_settings, {**check, "passed": False}, force=True, reason="rollout test of the other ranker"
    )
    assert message.startswith(f"{name} v{other} is champion (forced")
    assert champion_version(batch_settings) == other
    assert (
        mlflow_client.get_model_version(name, other).tags[FORCED_REASON_TAG]
        == "rollout test of the other ranker"
    )


@pytest.mark.parametrize("fails", [False, True])
def test_a_step_leaves_nothing_cached_for_the_next_one(spark, table_settings, monkeypatch, fails):
    def caching_step(ctx):
        frame = ctx.spark.range(10).cache()
        assert frame.count() == 10 and not spark_cache_is_empty(ctx.spark)
        if fails:
            raise RuntimeError("step failed half-way")
        return {"rows": 10}

    monkeypatch.setitem(STEPS, "cache_probe", caching_step)
    ctx = BatchContext(spark, table_settings, RUN_DATE)
    if fails:
        with pytest.raises(RuntimeError, match="half-way"):
            run_step(ctx, "cache_probe")
    else:
        assert run_step(ctx, "cache_probe")["rows"] == 10
    assert spark_cache_is_empty(spark)
