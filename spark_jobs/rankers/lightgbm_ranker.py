"""LightGBM lambdarank trained data-parallel across Spark tasks (a barrier stage).

There is no LightGBM-on-Spark-4 library (SynapseML stops at Spark 3), so this runs LightGBM's own
distributed mode inside Spark:

1. Rows get a dense query id per user and go to worker `qid % num_workers` sorted by (qid, item_id)
   (`partitioned_queries`), so each worker holds whole query groups (lambdarank gradients are per
   query), no worker is empty, and the model does not depend on the order a shuffle delivered rows in.
2. A barrier stage starts all workers at once. Each opens a free port, and `BarrierTaskContext.allGather`
   tells every worker the `host:port` of all the others (ordered by partition = LightGBM rank).
3. Each worker trains with `tree_learner=data`, `num_machines`, `machines`, `local_listen_port` and
   `pre_partition=True` on its own rows: LightGBM agrees on feature bins and all-reduces the gradient
   histograms over its socket network, so every worker grows the same trees as one process would on
   all the data. Rank 0 returns the model text to the driver.
   Feature bins come from one sample of the training rows broadcast to every worker (a Dataset
   `reference` built before the network starts): LightGBM's distributed bin finding would otherwise
   bin each feature from one worker's rows only, which on small data changes the splits.

With one worker it is plain LightGBM in one task (no network), which is what the tests compare against.
Called by spark_jobs.steps.models (step `train_lightgbm`) and `lambdarec evaluate`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_store.ranking import RANKER_FEATURES
from spark_jobs.rankers.common import RankerParams, TrainedRanker, partitioned_queries

NETWORK_TIMEOUT_MINUTES = 5
BIN_SAMPLE_ROWS = 200_000  # LightGBM's own default bin_construct_sample_cnt


class DistributedTrainingError(RuntimeError):
    """LightGBM's workers did not produce a model (see the Spark task logs for the worker's error)."""


def lightgbm_params(params: RankerParams) -> dict:
    """Booster parameters (what is logged to MLflow); the network ones are added per worker."""
    return {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "lambdarank_truncation_level": 20,
        "num_iterations": params.trees,
        "num_leaves": min(2**params.max_depth - 1, 63),
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "min_data_in_leaf": 20,
        "min_sum_hessian_in_leaf": params.min_child_weight * 1e-3,
        "seed": params.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def network_params(peers: list[str], rank: int, threads: int) -> dict:
    """LightGBM's socket-network parameters for worker `rank` of `peers` (host:port each)."""
    if len(peers) == 1:
        return {"num_threads": threads}
    return {
        "tree_learner": "data",
        "num_machines": len(peers),
        "machines": ",".join(peers),
        "local_listen_port": int(peers[rank].rsplit(":", 1)[1]),
        "time_out": NETWORK_TIMEOUT_MINUTES,
        "pre_partition": True,
        "num_threads": threads,
    }


def sample_features(rows: DataFrame, size: int) -> np.ndarray:
    """Up to `size` feature vectors: the rows with the smallest hash of (qid, item_id), so the same rows
    whatever the partitioning."""
    order = F.xxhash64(F.lit(7), "qid", "item_id")
    sample = rows.orderBy(order, "qid", "item_id").limit(size).select("features").collect()
    return np.array([r.features for r in sample], dtype=np.float32).reshape(-1, len(RANKER_FEATURES))


def free_port(host: str) -> int:
    """A port nobody listens on right now (LightGBM binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def group_rows(rows: Iterable[tuple[int, list[float], float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, group sizes) of (qid, features, relevance) rows, sorted into contiguous queries."""
    ordered = sorted(rows, key=lambda r: r[0])
    qids = np.array([r[0] for r in ordered], dtype=np.int64)
    features = np.array([r[1] for r in ordered], dtype=np.float32).reshape(len(ordered), len(RANKER_FEATURES))
    labels = np.array([r[2] for r in ordered], dtype=np.float32)
    _, sizes = np.unique(qids, return_counts=True)  # qids are sorted, so unique keeps their order
    return features, labels, sizes


def _train_worker(booster_params: dict, threads: int, bin_sample):
    def train(rows: Iterator) -> Iterator[str]:
        import lightgbm
        from pyspark import BarrierTaskContext

        # Bins from the same sample on every worker (built before the network starts), so each rank
        # buckets features exactly like the others and like a single process would.
        reference = lightgbm.Dataset(
            bin_sample.value, params={"verbosity": -1}, free_raw_data=False
        ).construct()

        context = BarrierTaskContext.get()
        # LightGBM finds itself in `machines` by IP address, so name hosts by IP, not by name.
        host = socket.gethostbyname(context.getTaskInfos()[context.partitionId()].address.rsplit(":", 1)[0])
        peers = context.allGather(f"{host}:{free_port(host)}")
        rank = context.partitionId()
        features, labels, sizes = group_rows((row.qid, row.features, row.relevance) for row in rows)
        dataset = lightgbm.Dataset(
            features, label=labels, group=sizes, reference=reference, params={"verbosity": -1}
        )
        booster = lightgbm.train({**booster_params, **network_params(peers, rank, threads)}, dataset)
        if len(peers) > 1:
            booster.free_network()  # release the ports before the task ends
        context.barrier()
        if rank == 0:
            yield booster.model_to_string()

    return train


def train_lightgbm(examples: DataFrame, params: RankerParams) -> TrainedRanker:
    """Fit lambdarank on (user_id, item_id, features, relevance) rows with `params.num_workers` ranks."""
    import lightgbm

    queries = examples.select("user_id").distinct().count()
    workers = max(1, min(params.num_workers, queries))
    threads = int(examples.sparkSession.conf.get("spark.task.cpus", "1"))
    booster_params = lightgbm_params(params)
    by_worker = partitioned_queries(examples, workers).cache()
    bin_sample = examples.sparkSession.sparkContext.broadcast(sample_features(by_worker, BIN_SAMPLE_ROWS))
    started = time.perf_counter()
    models = (
        by_worker.rdd.barrier().mapPartitions(_train_worker(booster_params, threads, bin_sample)).collect()
    )
    seconds = time.perf_counter() - started
    by_worker.unpersist()
    if len(models) != 1:
        raise DistributedTrainingError(f"expected one model from rank 0, got {len(models)}")
    booster = lightgbm.Booster(model_str=models[0])
    return TrainedRanker(
        kind="lightgbm",
        booster=booster,
        n_trees=booster.num_trees(),
        params=booster_params,
        train_seconds=seconds,
        num_workers=workers,
    )
