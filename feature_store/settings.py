"""The one typed settings object of lambdarec.

Every layer (CLI, Spark jobs, streaming job, serving, DAGs) reads its configuration from
`Settings`, built from environment variables with the prefix `LAMBDAREC_`. The defaults are the
embedded local setup: Spark `local[*]`, Delta tables and all other state under one data directory,
MLflow on SQLite in that directory, and a private redis-server (started by lambdarec itself) unless
`LAMBDAREC_REDIS_URL` names one. Production changes settings only, never code.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def project_root() -> Path:
    """The repository (or installed distribution) root: the parent of the `feature_store` package."""
    return Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAMBDAREC_", extra="ignore")

    # -- where state lives ---------------------------------------------------------------------
    profile: Literal["local", "production"] = Field(
        "local",
        description="`local` = embedded services and no API keys required; `production` refuses to start without keys.",
    )
    data_dir: Path = Field(
        default_factory=lambda: project_root() / "data",
        description="All state: Delta tables, checkpoints, MLflow DB and artifacts, Redis files.",
    )
    jars_dir: Path = Field(
        default_factory=lambda: project_root() / ".cache" / "jars",
        description="Delta Lake JARs resolved once from Maven Central (make setup); Spark loads them from here.",
    )
    tables_uri: str | None = Field(
        None, description="Root of the Delta tables (e.g. s3a://bucket/lambdarec); default <data_dir>/delta."
    )

    # -- Spark ---------------------------------------------------------------------------------
    spark_master: str = "local[*]"
    spark_app_name: str = "lambdarec"
    spark_driver_memory: str = "2g"
    spark_shuffle_partitions: int = 4
    spark_ui_enabled: bool = False
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark conf (JSON object).")
    spark_cluster_port: int = Field(
        7077,
        description="Master port of the local standalone cluster (`lambdarec spark-cluster start`; 0 = a free port).",
    )
    spark_cluster_workers: int = Field(2, description="Workers of the local standalone cluster.")
    spark_cluster_worker_cores: int = Field(1, description="Cores each local worker offers.")
    spark_cluster_worker_memory: str = Field("2g", description="Executor memory each local worker offers.")

    # -- Redis (online store and default event bus) ----------------------------------------------
    redis_url: str | None = Field(
        None, description="redis://host:port/db of the online store; empty = start a private redis-server."
    )
    redis_server_bin: str = "redis-server"
    redis_key_prefix: str = "lr"
    redis_timeout_s: float = 0.05

    # -- event bus -----------------------------------------------------------------------------
    event_bus: Literal["redis", "kafka"] = "redis"
    event_stream: str = Field("lr:events", description="Redis Stream key of the event bus.")
    kafka_bootstrap_servers: str | None = Field(
        None,
        description="host:port,... of the Kafka brokers; empty = the local broker `lambdarec kafka start` runs.",
    )
    kafka_topic: str = "lambdarec-events"
    kafka_topic_partitions: int = Field(
        1, description="Partitions of the event topic the local broker creates."
    )
    kafka_linger_ms: float = Field(
        1.0,
        description="How long the producer waits to fill a batch: a request's events leave together, without adding latency.",
    )
    kafka_jars_dir: Path = Field(
        default_factory=lambda: project_root() / ".cache" / "kafka" / "libs",
        description="The local Kafka broker's JARs (make setup); kept apart from Spark's `jars_dir`.",
    )

    # -- MLflow --------------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(None, description="Default: sqlite:///<data_dir>/mlflow.db")
    mlflow_registry_uri: str | None = Field(None, description="Default: the tracking URI.")
    mlflow_artifact_root: str | None = Field(None, description="Default: <data_dir>/mlartifacts")
    mlflow_experiment: str = "lambdarec"
    ranker_model_name: str = "lambdarec-ranker"

    # -- batch layer ---------------------------------------------------------------------------
    session_gap_minutes: int = Field(30, description="Inactivity gap that starts a new session.")
    positive_rating_threshold: float = Field(
        3.5, description="Explicit ratings at or above this are positive labels."
    )
    future_tolerance_minutes: int = Field(
        10,
        description="Events stamped further than this past ingest time are quarantined as future_timestamp.",
    )
    feature_windows_days: tuple[int, ...] = (1, 7, 30)

    # -- batch models (candidates, rankers, promotion, publish) ---------------------------------
    label_horizon_days: int = Field(
        7, description="Labels come from [T, T + horizon); the holdout is the last horizon."
    )
    candidates_per_source: int = Field(100, description="Candidates each source proposes per user.")
    active_user_days: int = Field(
        30, description="Users with an event in the days before the run get candidates."
    )
    # ALS (implicitPrefs): the grid tried on a validation split of the history (spark_jobs.als_tuning);
    # one value each = no tuning.
    als_ranks: tuple[int, ...] = Field((32,), description="Latent factor counts tried.")
    als_reg_params: tuple[float, ...] = Field((0.05, 0.5), description="L2 regularisations tried.")
    als_alphas: tuple[float, ...] = Field(
        (10.0, 40.0), description="Confidence scalings of implicit weights tried."
    )
    als_max_iters: tuple[int, ...] = Field((10,), description="Alternating iterations tried.")
    als_validation_share: float = Field(
        0.2, description="Each user's latest share of interactions the grid is judged on."
    )
    als_tune_metric: str = Field(
        "ndcg@10",
        description="Metric the grid point is chosen by (ndcg@10 or recall@<candidates_per_source>).",
    )
    covisit_window_minutes: int = Field(
        60, description="Two items co-visit when in one session at most this far apart."
    )
    covisit_max_span: int = Field(
        10, description="... and at most this many events apart (bounds the pair count)."
    )
    covisit_neighbors: int = Field(50, description="Similar items kept per item (also published as `sim`).")
    popular_window_days: int = Field(30, description="Popularity counts event weights of the last days ...")
    popular_half_life_days: float = Field(7.0, description="... decayed with this half-life (trending).")
    ease_lambda: float = Field(
        500.0, description="L2 regularisation of the EASE item-to-item source (larger: closer to popularity)."
    )
    ease_max_items: int = Field(
        10_000,
        description="Most popular items EASE is computed for (driver memory ~24 x items^2 bytes, inverse cubic in items).",
    )
    max_negatives_per_query: int = Field(
        50, description="Candidates without a label kept per moment in the training set."
    )
    request_moments_per_user: int = Field(
        8, description="Moments (events) per user the training set asks at (request-time examples)."
    )
    request_label_horizon_minutes: int = Field(
        60, description="A request-time example's label: positive events in (t, t + this]."
    )
    train_num_workers: int = Field(
        2, description="Spark tasks that train one ranker together (xgboost.spark, LightGBM)."
    )
    # Small, slow-learning trees: a ranker sees a few hundred to a few thousand queries a night, and
    # deeper trees fitted the training queries at the cost of the holdout (benchmarks/REPORT.md, issue 18).
    ranker_trees: int = 200
    ranker_max_depth: int = 3
    ranker_learning_rate: float = 0.05
    ranker_min_child_weight: float = Field(
        10.0, description="XGBoost's min_child_weight (LightGBM: x 1e-3 as min_sum_hessian_in_leaf)."
    )
    ranker_compress_tolerance: float = Field(
        0.005,
        description="The compressed model keeps the fewest first trees whose validation NDCG@10 is within this of the full model.",
    )
    promotion_metric: str = Field("ndcg@10", description="Holdout metric the promotion gate compares.")
    promotion_min_gain: float = Field(
        0.002,
        description="The lower bound of the paired bootstrap interval of the challenger's per-user gain over the "
        "champion (first model: popularity) on the same holdout must be above this.",
    )
    promotion_min_users: int = Field(
        100, description="Holdout users with relevant items the gate needs before it decides."
    )
    promotion_confidence: float = Field(0.95, description="Confidence of the gate's bootstrap interval.")
    promotion_resamples: int = Field(
        1000, description="Bootstrap resamples of the gate (seeded: the same holdout, the same decision)."
    )
    holdout_days: int | None = Field(
        None,
        description="Days before the run date the promotion gate judges on (default: label_horizon_days). Longer "
        "holdouts hold more users (sparse data) and move the training cut-off back by as much.",
    )
    batch_top_n: int = Field(100, description="Recommendations kept and published per user.")
    publish_keep_versions: int = Field(
        3, description="Published batch versions kept for rollback; older ones expire."
    )
    publish_grace_s: int = Field(
        600, description="An expired version's keys live this long so in-flight readers finish."
    )
    publish_pending_ttl_s: int = Field(
        2 * 24 * 3600,
        ge=60,
        description="TTL a batch version's keys get as they are written, until its pointer flip makes them permanent: "
        "a publish that fails half-way (or a backfill that is not made current) leaves nothing behind for good.",
    )

    # -- orchestration (Airflow, MLflow UI, the demo) --------------------------------------------
    airflow_port: int = Field(8080, description="Port of the local `airflow standalone` UI and REST API.")
    airflow_parallelism: int = Field(
        4, description="Task slots of the local Airflow (each idle slot costs memory)."
    )
    airflow_admin_user: str = Field(
        "admin", description="User of the local Airflow; its password is generated once."
    )
    mlflow_ui_port: int = Field(5000, description="Port of the local MLflow UI (`mlflow server`).")
    stream_max_staleness_s: float = Field(
        120.0,
        description="The watchdog restarts the streaming job when an unread event has waited longer than this.",
    )
    stream_heartbeat_ttl_s: float = Field(
        15.0,
        gt=1.0,
        description="The streaming job renews its heartbeat key every second with this TTL; a job (on any host) "
        "counts as alive while the key exists, and a second one is not started.",
    )
    stream_restart_command: list[str] = Field(
        default_factory=list,
        description="How the watchdog restarts the streaming job (JSON list); empty = `lambdarec stream stop` + "
        "`lambdarec stream start --background` on the same machine (the local setup).",
    )

    # -- speed layer ---------------------------------------------------------------------------
    stream_trigger_ms: int = Field(
        250,
        description="Trigger of the speed query (bus -> Redis features). 250 ms: p99 freshness 0.57 s at 1,000 events/s "
        "on 2 cores, where 500 ms gave 1.08 s (benchmarks/bench_freshness).",
    )
    stream_max_rows_per_batch: int = 20_000
    stream_bronze_trigger_ms: int = Field(
        5_000,
        description="Trigger of the bronze query (bus -> Delta bronze/quarantine): fewer, larger Delta commits than the speed query's.",
    )
    event_stream_maxlen: int = Field(
        1_000_000,
        description="The bus stream is trimmed to about this many entries, never below what every streaming query committed.",
    )
    event_stream_max_backlog: int = Field(
        2_000_000,
        description="POST /v1/events answers 503 (nothing published) while the bus stream would hold more entries than this: "
        "the streaming job is behind or stalled, and the bus must not run its Redis out of memory. Above event_stream_maxlen, "
        "since committed entries are trimmed only beyond that length.",
    )
    stream_max_event_bytes: int = Field(
        1_048_576,
        description="A bus entry larger than this is quarantined (reason `oversize`) without being decoded.",
    )
    stream_max_bytes_per_batch: int = Field(
        64 * 1_048_576,
        description="Admission control by bytes: a micro-batch never holds more payload than this in the driver.",
    )
    recent_items_max: int = 50
    speed_dedupe_events_per_user: int = Field(
        200,
        description="Event ids the speed layer remembers per user: a re-sent event among them counts once in the features.",
    )
    speed_dedupe_ttl_s: int = Field(
        24 * 3600, description="How long the speed layer remembers a user's event ids after their last event."
    )
    speed_ttl_s: int = Field(7 * 24 * 3600, description="TTL of per-user speed-layer keys.")

    # -- serving -------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_keys_sha256: list[str] = Field(
        default_factory=list, description="SHA-256 hex digests of accepted API keys (JSON list)."
    )
    max_k: int = 100
    model_poll_interval_s: float = 5.0
    serving_redis_budget_s: float = Field(
        0.1,
        description="Time one request may spend on Redis; past it the answer comes from the local fallback (degraded).",
    )
    serving_redis_max_connections: int = Field(
        32, description="Redis connections of one API process (requests queue for one)."
    )
    serving_redis_retry_s: float = Field(
        0.5,
        description="After a Redis failure, answer from the fallback for this long before trying Redis again.",
    )
    serving_redis_timeouts_to_open: int = Field(
        3,
        description="Time-outs in a row before requests skip Redis for serving_redis_retry_s (an error skips it at once).",
    )
    serving_cache_enabled: bool = Field(
        True,
        description="In-process cache of what changes only with the batch version (item features, recs, similar).",
    )
    serving_cache_max_bytes: int = Field(
        512 * 2**20,
        ge=0,
        description="Memory budget of the batch-version cache (half users, a quarter each items and similar lists); oldest entries go first.",
    )
    serving_prefetch_enabled: bool = Field(
        True, description="Warm the cache for a user when their event arrives."
    )
    serving_max_prefetches: int = Field(
        64,
        ge=0,
        description="Prefetches running at once; events past it do not warm the cache (counted as skipped).",
    )
    serving_max_body_bytes: int = Field(
        1_048_576, ge=1, description="Largest request body; a larger one is a 413 before authentication runs."
    )
    serving_max_in_flight: int = Field(
        512,
        ge=0,
        description="Requests one API process serves at once; past it a 503 with Retry-After (0 = no cap).",
    )
    serving_rate_limit_per_s: float = Field(
        0.0,
        ge=0.0,
        description="Requests per second per API key (token bucket; past it a 429 with Retry-After); 0 = no limit.",
    )
    serving_rate_limit_burst: int = Field(
        200, ge=1, description="Requests an API key may send at once before its rate applies."
    )
    serving_microbatch_enabled: bool = Field(
        False, description="Run concurrent requests' candidates in one model call."
    )
    serving_microbatch_wait_ms: float = Field(
        1.0, description="How long a micro-batch waits for more requests."
    )
    serving_gc_freeze: bool = Field(
        True, description="gc.freeze() after start-up so full collections skip start-up objects."
    )
    serving_orjson: bool = Field(
        True, description="Serialize responses with orjson (else the stdlib json encoder)."
    )
    serving_hiredis: bool = Field(
        True, description="Parse Redis replies with hiredis (else the pure-Python parser, through redis-py)."
    )
    serving_uvloop: bool = Field(
        True, description="Run `lambdarec serve` on uvloop (else the stdlib asyncio loop)."
    )
    serving_fast_redis: bool = Field(
        True,
        description="Online-store reads over serving's own pipelined connection (asyncio protocol + hiredis) instead of redis-py's pipeline.",
    )
    serving_fast_route: bool = Field(
        True,
        description="Answer plainly valid GET /v1/recommendations requests before FastAPI's parameter machinery (errors still come from the route).",
    )
    serving_ranker_file: Literal["onnx", "onnx_compressed", "native"] = Field(
        "onnx",
        description="Which file of the champion to run; the native booster is the fallback if ONNX fails.",
    )
    serving_use_ranker: bool = Field(
        True,
        description="Order candidates by the @champion ranker (False: by the hand priors of the sources, an ablation).",
    )
    serving_max_per_category: int = Field(
        0, ge=0, description="Diversity cap per category in one answer (0 = off)."
    )
    serving_recent_items: int = Field(
        10, description="How many of the user's recent items seed real-time candidates."
    )
    serving_neighbors_per_item: int = Field(
        20, description="Co-visitation / similar neighbours taken per recent item."
    )
    serving_trending_window: str = Field(
        "1h", description="Trending window read by serving (speed-layer key suffix)."
    )
    serving_trending_candidates: int = Field(50, description="Trending items added as candidates.")
    serving_max_candidates: int = Field(400, description="Candidates ranked per request at most.")
    serving_max_exclude: int = Field(200, description="Most item ids a request may exclude.")

    @field_validator("event_stream_max_backlog")
    @classmethod
    def _backlog_above_trim_length(cls, value: int, info) -> int:
        maxlen = info.data.get("event_stream_maxlen")
        if maxlen is not None and value <= maxlen:
            raise ValueError(
                f"LAMBDAREC_EVENT_STREAM_MAX_BACKLOG ({value}) must be above LAMBDAREC_EVENT_STREAM_MAXLEN ({maxlen}): "
                "the bus keeps that many committed entries before trimming"
            )
        return value

    @field_validator("data_dir", "jars_dir", "kafka_jars_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # -- derived locations (one place, so nobody builds paths by hand) --------------------------
    @property
    def tables_root(self) -> str:
        return (self.tables_uri or str(self.data_dir / "delta")).rstrip("/")

    def table_path(self, table: str) -> str:
        """URI of a Delta table by its layout name, e.g. `bronze/events` (see feature_store.tables)."""
        return f"{self.tables_root}/{table}"

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME of the local Airflow: its SQLite DB, logs and generated admin password."""
        return self.data_dir / "airflow"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the services lambdarec starts itself."""
        return self.data_dir / "run"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.tracking_uri

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or str(self.data_dir / "mlartifacts")

    @property
    def session_gap(self) -> timedelta:
        return timedelta(minutes=self.session_gap_minutes)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (tests, CLI flags) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
