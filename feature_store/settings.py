"""The one typed settings object of lambdarec.

Every layer (CLI, Spark jobs, streaming job, serving, DAGs) reads its configuration from `Settings`,
built from environment variables with the prefix `LAMBDAREC_`. The defaults are the embedded local
setup: Spark `local[*]`, Delta tables and all other state under one data directory, MLflow on SQLite
in that directory, and a private redis-server (started by lambdarec itself) unless
`LAMBDAREC_REDIS_URL` names one. Production changes settings only, never code.

Shape: by component, like Feast's per-store configs. `Settings` holds where state lives (`profile`,
`data_dir`, `jars_dir`, `tables_uri`) and one typed model per component: `spark`, `s3`, `redis`, `bus`,
`kafka`, `mlflow`, `batch`, `candidates`, `ranker`, `promotion`, `publish`, `stream`, `speed`,
`serving`, `auth`, `airflow` (read as `settings.spark.master`, `settings.batch.label_horizon_days`).

Names for operators stay flat: every field has one flat name, its component's `flat_prefix` followed by
the field name (`spark_` + `master`), except the few a component lists in `flat_names` (`bus.kind` is
`event_bus`). That rule, in `Component.flat_name`, is the only mapping: `LAMBDAREC_<FLAT NAME>` in the
environment, `Settings(spark_master=...)`, `load_settings(**flat)` and `settings.updated(**flat)` all
go through it (an unknown explicit name is an error; unknown environment variables are ignored).

Derived values: a component holds its settings as set; a value derived from `data_dir` (locations, the
MLflow URIs' defaults) is a property of `Settings`, since a component does not know `data_dir`; one
derived from a component alone is a property of that component (`batch.session_gap`).

Why one module: the components, their flat names and the source that reads them are one definition,
read top to bottom; most of its length is the fields' descriptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from feature_store.events import MAX_EVENT_WIRE_BYTES
from feature_store.ranking import CANDIDATE_SOURCES, MAX_RELEVANCE


def project_root() -> Path:
    """The repository (or installed distribution) root: the parent of the `feature_store` package."""
    return Path(__file__).resolve().parent.parent


def _absolute(value: Path) -> Path:
    return value.expanduser().resolve()


class Component(BaseModel):
    """The settings of one part of lambdarec. A field's flat name (environment `LAMBDAREC_<FLAT>`,
    keyword of `Settings`/`updated`) is `flat_prefix + field`, or its entry in `flat_names`."""

    model_config = ConfigDict(extra="forbid")

    flat_prefix: ClassVar[str] = ""
    flat_names: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def flat_name(cls, field: str) -> str:
        return cls.flat_names.get(field, cls.flat_prefix + field)


# -- components ----------------------------------------------------------------------------------------
class SparkSettings(Component):
    flat_prefix: ClassVar[str] = "spark_"

    master: str = "local[*]"
    app_name: str = "lambdarec"
    driver_memory: str = "2g"
    shuffle_partitions: int = 4
    ui_enabled: bool = False
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark conf (JSON object).")
    cluster_port: int = Field(
        7077,
        description="Master port of the local standalone cluster (`lambdarec spark-cluster start`; 0 = a free port).",
    )
    cluster_workers: int = Field(2, description="Workers of the local standalone cluster.")
    cluster_worker_cores: int = Field(1, description="Cores each local worker offers.")
    cluster_worker_memory: str = Field("2g", description="Executor memory each local worker offers.")


class S3Settings(Component):
    """S3-compatible object storage for the Delta tables (`LAMBDAREC_TABLES_URI=s3a://bucket/prefix`):
    every Spark session lambdarec builds then carries Hadoop's S3A connector configured from these.
    Empty values leave S3A's own defaults: AWS's endpoint for the region, and its credential chain
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity, instance or pod roles)."""

    flat_prefix: ClassVar[str] = "s3_"

    endpoint: str | None = Field(
        None,
        description="URL of an S3-compatible endpoint with its scheme (http://minio:9000; `lambdarec s3 start` "
        "prints the local one); empty = AWS S3.",
    )
    region: str | None = Field(
        None, description="Region the requests are signed for (fs.s3a.endpoint.region)."
    )
    path_style_access: bool = Field(
        False,
        description="Address buckets as endpoint/bucket instead of bucket.endpoint: MinIO and the local endpoint "
        "need it, since their host names have no per-bucket subdomains.",
    )
    access_key_id: str | None = Field(None, description="Access key; empty = S3A's credential chain.")
    secret_access_key: str | None = Field(
        None,
        description="Secret key of `access_key_id` (a secret: in production prefer the credential chain).",
    )


class RedisSettings(Component):
    """The online store (and the default event bus)."""

    flat_prefix: ClassVar[str] = "redis_"

    url: str | None = Field(
        None, description="redis://host:port/db of the online store; empty = start a private redis-server."
    )
    cluster: bool = Field(
        False,
        description="The online store is a Redis Cluster: LAMBDAREC_REDIS_URL names any one of its nodes (or, when "
        "empty, a private 3-master cluster is started on loopback). Every client then routes by hash slot.",
    )
    server_bin: str = "redis-server"
    key_prefix: str = "lr"


class BusSettings(Component):
    """The event bus: a Redis Stream (default) or a Kafka topic (see `KafkaSettings`)."""

    flat_prefix: ClassVar[str] = "event_"
    flat_names: ClassVar[Mapping[str, str]] = {"kind": "event_bus"}

    kind: Literal["redis", "kafka"] = "redis"
    stream: str = Field("lr:events", description="Redis Stream key of the event bus.")
    stream_maxlen: int = Field(
        1_000_000,
        description="The bus stream is trimmed to about this many entries, never below what every streaming query committed.",
    )
    stream_max_backlog: int = Field(
        2_000_000,
        description="POST /v1/events answers 503 (nothing published) while the bus stream would hold more entries than this: "
        "the streaming job is behind or stalled, and the bus must not run its Redis out of memory. Above event_stream_maxlen, "
        "since committed entries are trimmed only beyond that length.",
    )

    @field_validator("stream_max_backlog")
    @classmethod
    def _backlog_above_trim_length(cls, value: int, info) -> int:
        maxlen = info.data.get("stream_maxlen")
        if maxlen is not None and value <= maxlen:
            raise ValueError(
                f"LAMBDAREC_EVENT_STREAM_MAX_BACKLOG ({value}) must be above LAMBDAREC_EVENT_STREAM_MAXLEN ({maxlen}): "
                "the bus keeps that many committed entries before trimming"
            )
        return value


class KafkaSettings(Component):
    """The Kafka event bus (`event_bus=kafka`) and the local broker `lambdarec kafka start` runs."""

    flat_prefix: ClassVar[str] = "kafka_"

    bootstrap_servers: str | None = Field(
        None,
        description="host:port,... of the Kafka brokers; empty = the local broker `lambdarec kafka start` runs.",
    )
    topic: str = "lambdarec-events"
    topic_partitions: int = Field(1, description="Partitions of the event topic the local broker creates.")
    linger_ms: float = Field(
        1.0,
        description="How long the producer waits to fill a batch: a request's events leave together, without adding latency.",
    )
    jars_dir: Path = Field(
        default_factory=lambda: project_root() / ".cache" / "kafka" / "libs",
        description="The local Kafka broker's JARs (make setup); kept apart from Spark's `jars_dir`.",
    )

    _absolute_jars_dir = field_validator("jars_dir")(_absolute)


class MlflowSettings(Component):
    """MLflow as configured; `Settings.tracking_uri`, `.registry_uri` and `.artifact_root` resolve the
    defaults under `data_dir` (read those)."""

    flat_prefix: ClassVar[str] = "mlflow_"

    tracking_uri: str | None = Field(None, description="Default: sqlite:///<data_dir>/mlflow.db")
    registry_uri: str | None = Field(None, description="Default: the tracking URI.")
    artifact_root: str | None = Field(None, description="Default: <data_dir>/mlartifacts")
    experiment: str = "lambdarec"
    ui_port: int = Field(5000, description="Port of the local MLflow UI (`mlflow server`).")


class BatchSettings(Component):
    """The batch layer's data: sessions, quarantine, features, labels, the holdout, what is kept."""

    flat_names: ClassVar[Mapping[str, str]] = {"top_n": "batch_top_n"}

    session_gap_minutes: int = Field(30, description="Inactivity gap that starts a new session.")
    positive_rating_threshold: float = Field(
        3.5, description="Explicit ratings at or above this are positive labels."
    )
    future_tolerance_minutes: int = Field(
        10,
        description="Events stamped further than this past ingest time are quarantined as future_timestamp.",
    )
    feature_windows_days: tuple[int, ...] = (1, 7, 30)
    label_horizon_days: int = Field(
        7, description="Labels come from [T, T + horizon); the holdout is the last horizon."
    )
    holdout_days: int | None = Field(
        None,
        description="Days before the run date the promotion gate judges on (default: label_horizon_days). Longer "
        "holdouts hold more users (sparse data) and move the training cut-off back by as much.",
    )
    active_user_days: int = Field(
        30, description="Users with an event in the days before the run get candidates."
    )
    max_negatives_per_query: int = Field(
        50, description="Candidates without a label kept per moment in the training set."
    )
    request_moments_per_user: int = Field(
        8,
        description="Moments (events, session starts) per user the training set asks at (request-time examples).",
    )
    request_session_start_moments: bool = Field(
        True,
        description="Also ask 1 ms before each session's first event (a user opening the app), not only at events.",
    )
    request_moments_without_speed_per_user: int = Field(
        2,
        ge=0,
        description="More moments per user asked as serving is when the speed layer holds nothing for the "
        "user (nightly candidates only, real-time inputs 0): trains the ranker for that regime.",
    )
    request_label_horizon_minutes: int = Field(
        60, description="A request-time example's label: positive events in (t, t + this]."
    )
    request_next_item_relevance: int = Field(
        0,
        ge=0,
        le=MAX_RELEVANCE,
        description="The label grade of a request-time example's next item (the first candidate the user "
        "turned to after t) when its event's grade is lower; 0: graded like the rest of the horizon.",
    )
    top_n: int = Field(100, description="Recommendations kept and published per user.")

    @property
    def session_gap(self) -> timedelta:
        return timedelta(minutes=self.session_gap_minutes)


class CandidateSettings(Component):
    """The nightly candidate sources (ALS, co-visitation, popularity, EASE); spark_jobs.candidates."""

    flat_names: ClassVar[Mapping[str, str]] = {
        "per_source": "candidates_per_source",
        "sources": "candidate_sources",
    }

    sources: tuple[str, ...] = Field(
        CANDIDATE_SOURCES,
        description="The nightly sources that propose candidates (a subset of als, covisit, popular, ease); "
        "a source left out is not computed and its ranker input stays empty.",
    )
    per_source: int = Field(100, description="Candidates each source proposes per user.")
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
    pool_max_items: int = Field(
        5_000,
        description="Most popular items the pool scorers (EASE at three lambdas, RP3beta) index; each task holds "
        "16 x items^2 bytes of their weights.",
    )

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(CANDIDATE_SOURCES))
        if unknown or not value:
            raise ValueError(
                f"candidate sources must be a non-empty subset of {', '.join(CANDIDATE_SOURCES)}; got {list(value)}"
            )
        return tuple(source for source in CANDIDATE_SOURCES if source in value)


class RankerSettings(Component):
    """The learned ranker: its training (spark_jobs.rankers) and its name in the model registry."""

    flat_prefix: ClassVar[str] = "ranker_"
    flat_names: ClassVar[Mapping[str, str]] = {"num_workers": "train_num_workers"}

    model_name: str = "lambdarec-ranker"
    num_workers: int = Field(
        2, description="Spark tasks that train one ranker together (xgboost.spark, LightGBM)."
    )
    # Small, slow-learning trees: a ranker sees a few hundred to a few thousand queries a night, and
    # deeper trees fitted the training queries at the cost of the holdout (benchmarks/REPORT.md, issue 18).
    trees: int = Field(
        200,
        description="Most trees a ranker grows; the nightly keeps the prefix with the best validation NDCG@10.",
    )
    max_depth: int = 3
    learning_rate: float = 0.05
    min_child_weight: float = Field(
        10.0, description="XGBoost's min_child_weight (LightGBM: x 1e-3 as min_sum_hessian_in_leaf)."
    )
    compress_tolerance: float = Field(
        0.005,
        description="The compressed model keeps the fewest first trees whose validation NDCG@10 is within this of the full model.",
    )


class PromotionSettings(Component):
    """The promotion gate's rule (spark_jobs.model_registry.gate): on `metric`, per-user paired gains
    whose bootstrap interval at `confidence` lies above `min_gain`, over at least `min_users` users."""

    flat_prefix: ClassVar[str] = "promotion_"

    metric: str = Field("ndcg@10", description="Holdout metric the promotion gate compares.")
    min_gain: float = Field(
        0.002,
        description="The lower bound of the paired bootstrap interval of the challenger's per-user gain over the "
        "champion (first model: popularity) on the same holdout must be above this.",
    )
    min_users: int = Field(
        100, description="Holdout users with relevant items the gate needs before it decides."
    )
    confidence: float = Field(0.95, description="Confidence of the gate's bootstrap interval.")
    resamples: int = Field(
        1000, description="Bootstrap resamples of the gate (seeded: the same holdout, the same decision)."
    )


class PublishSettings(Component):
    """Publishing a batch version to the online store (spark_jobs.publish)."""

    flat_prefix: ClassVar[str] = "publish_"

    keep_versions: int = Field(
        3, description="Published batch versions kept for rollback; older ones expire."
    )
    grace_s: int = Field(
        600, description="An expired version's keys live this long so in-flight readers finish."
    )
    pending_ttl_s: int = Field(
        2 * 24 * 3600,
        ge=60,
        description="TTL a batch version's keys get as they are written, until its pointer flip makes them permanent: "
        "a publish that fails half-way (or a backfill that is not made current) leaves nothing behind for good.",
    )


class StreamSettings(Component):
    """The streaming job: its queries' triggers and admission control, and the watchdog that keeps it up."""

    flat_prefix: ClassVar[str] = "stream_"

    trigger_ms: int = Field(
        150,
        description="Trigger of the speed query (bus -> Redis features). 150 ms: p99 freshness 0.42-0.44 s at 1,000 "
        "events/s on 2 cores where 250 ms gave 0.47-0.53 s, for 0.1-0.25 more of a core in the job "
        "(benchmarks/full/2026-12-07-s19/freshness-trigger).",
    )
    max_rows_per_batch: int = 20_000
    bronze_trigger_ms: int = Field(
        5_000,
        description="Trigger of the bronze query (bus -> Delta bronze/quarantine): fewer, larger Delta commits than the speed query's.",
    )
    max_event_bytes: int = Field(
        MAX_EVENT_WIRE_BYTES,
        description="A bus entry larger than this is quarantined (reason `oversize`) without being decoded. "
        "The default is well above what any valid event needs (feature_store.events.MAX_EVENT_WIRE_BYTES); "
        "a lower limit may quarantine valid events.",
    )
    max_bytes_per_batch: int = Field(
        64 * 1_048_576,
        description="Admission control by bytes: a micro-batch never holds more payload than this in the driver.",
    )
    max_staleness_s: float = Field(
        120.0,
        description="The watchdog restarts the streaming job when an unread event has waited longer than this.",
    )
    heartbeat_ttl_s: float = Field(
        15.0,
        gt=1.0,
        description="The streaming job renews its heartbeat key every second with this TTL; a job (on any host) "
        "counts as alive while the key exists, and a second one is not started.",
    )
    restart_command: list[str] = Field(
        default_factory=list,
        description="How the watchdog restarts the streaming job (JSON list); empty = `lambdarec stream stop` + "
        "`lambdarec stream start --background` on the same machine (the local setup).",
    )


class SpeedSettings(Component):
    """The speed layer's per-user keys in Redis (spark_jobs.streaming.speed_features)."""

    flat_prefix: ClassVar[str] = "speed_"
    flat_names: ClassVar[Mapping[str, str]] = {"recent_items_max": "recent_items_max"}

    recent_items_max: int = 50
    dedupe_events_per_user: int = Field(
        200,
        description="Event ids the speed layer remembers per user: a re-sent event among them counts once in the features.",
    )
    dedupe_ttl_s: int = Field(
        24 * 3600, description="How long the speed layer remembers a user's event ids after their last event."
    )
    ttl_s: int = Field(7 * 24 * 3600, description="TTL of per-user speed-layer keys.")


class ServingSettings(Component):
    """The API (`lambdarec serve`): where it listens, its limits, its Redis budget, cache and candidates."""

    flat_prefix: ClassVar[str] = "serving_"
    flat_names: ClassVar[Mapping[str, str]] = {
        "host": "api_host",
        "port": "api_port",
        "max_k": "max_k",
        "model_poll_interval_s": "model_poll_interval_s",
    }

    host: str = "127.0.0.1"
    port: int = 8000
    max_k: int = 100
    model_poll_interval_s: float = 5.0
    redis_budget_s: float = Field(
        0.1,
        description="Time one request may spend on Redis; past it the answer comes from the local fallback (degraded).",
    )
    events_budget_s: float = Field(
        0.5,
        description="Time POST /v1/events may wait for the event bus to confirm a batch (its own Redis "
        "connections); past it the answer is 503 and the client resends.",
    )
    redis_max_connections: int = Field(
        32, description="Redis connections of one API process (requests queue for one)."
    )
    redis_retry_s: float = Field(
        0.5,
        description="After a Redis failure, answer from the fallback for this long before trying Redis again.",
    )
    redis_timeouts_to_open: int = Field(
        3,
        description="Time-outs in a row before requests skip Redis for serving_redis_retry_s (an error skips it at once).",
    )
    cache_enabled: bool = Field(
        True,
        description="In-process cache of what changes only with the batch version (item features, recs, similar).",
    )
    cache_max_bytes: int = Field(
        512 * 2**20,
        ge=0,
        description="Memory budget of the batch-version cache (half users, a quarter each items and similar lists); oldest entries go first.",
    )
    prefetch_enabled: bool = Field(True, description="Warm the cache for a user when their event arrives.")
    max_prefetches: int = Field(
        64,
        ge=0,
        description="Prefetches running at once; events past it do not warm the cache (counted as skipped).",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1, description="Largest request body; a larger one is a 413 before authentication runs."
    )
    max_in_flight: int = Field(
        512,
        ge=0,
        description="Requests one API process serves at once; past it a 503 with Retry-After (0 = no cap).",
    )
    rate_limit_per_s: float = Field(
        0.0,
        ge=0.0,
        description="Requests per second per API key (token bucket; past it a 429 with Retry-After); 0 = no limit.",
    )
    rate_limit_burst: int = Field(
        200, ge=1, description="Requests an API key may send at once before its rate applies."
    )
    microbatch_enabled: bool = Field(
        False, description="Run concurrent requests' candidates in one model call."
    )
    microbatch_wait_ms: float = Field(1.0, description="How long a micro-batch waits for more requests.")
    ranker_file: Literal["onnx", "onnx_compressed", "native"] = Field(
        "onnx",
        description="Which file of the champion to run; the native booster is the fallback if ONNX fails.",
    )
    use_ranker: bool = Field(
        True,
        description="Order candidates by the @champion ranker (False: by the hand priors of the sources, an ablation).",
    )
    max_per_category: int = Field(0, ge=0, description="Diversity cap per category in one answer (0 = off).")
    recent_items: int = Field(
        10, ge=0, description="How many of the user's recent items seed real-time candidates (0: none)."
    )
    neighbors_per_item: int = Field(
        20, ge=0, description="Co-visitation / similar neighbours taken per recent item (0: none)."
    )
    trending_window: str = Field(
        "1h", description="Trending window read by serving (speed-layer key suffix)."
    )
    trending_candidates: int = Field(50, ge=0, description="Trending items added as candidates (0: none).")
    max_candidates: int = Field(400, description="Candidates ranked per request at most.")
    max_exclude: int = Field(200, description="Most item ids a request may exclude.")


class AuthSettings(Component):
    """API keys (serving.auth)."""

    flat_prefix: ClassVar[str] = "api_"

    keys_sha256: list[str] = Field(
        default_factory=list, description="SHA-256 hex digests of accepted API keys (JSON list)."
    )


class AirflowSettings(Component):
    """The local Airflow (`airflow standalone`) the demo and `lambdarec airflow` run."""

    flat_prefix: ClassVar[str] = "airflow_"

    port: int = Field(8080, description="Port of the local `airflow standalone` UI and REST API.")
    parallelism: int = Field(4, description="Task slots of the local Airflow (each idle slot costs memory).")
    admin_user: str = Field("admin", description="User of the local Airflow; its password is generated once.")


# -- the whole ------------------------------------------------------------------------------------------
class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAMBDAREC_", extra="forbid")

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

    # -- components ----------------------------------------------------------------------------
    spark: SparkSettings = Field(default_factory=SparkSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    candidates: CandidateSettings = Field(default_factory=CandidateSettings)
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    speed: SpeedSettings = Field(default_factory=SpeedSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _FlatEnvironment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        """Flat names (`spark_master=...`) into their components; they win over the component's
        other values (explicit keywords over the environment). An unknown name is an error."""
        if not isinstance(data, dict):
            return data
        known = flat_fields()
        nested = {k: v for k, v in data.items() if k in cls.model_fields}
        for key, value in data.items():
            if key in cls.model_fields:
                continue
            if key not in known:
                raise ValueError(
                    f"unknown setting {key!r}: settings are named as LAMBDAREC_* variables are, without the "
                    "prefix and in lower case (see feature_store.settings)"
                )
            component, name, _ = known[key]
            group = nested.get(component) or {}
            group = group.model_dump() if isinstance(group, BaseModel) else dict(group)
            group[name] = value
            nested[component] = group
        return nested

    _absolute_dirs = field_validator("data_dir", "jars_dir")(_absolute)

    def updated(self, **flat: object) -> Settings:
        """These settings with some changed, by flat name (`updated(spark_master="local[2]")`), validated
        as the environment is (`"0"` becomes a float where the setting is one); an unknown name is an error."""
        return type(self).model_validate({**self.model_dump(), **flat})

    def flat_values(self, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """Every setting by its flat name (the LAMBDAREC_* variable without the prefix, in lower case)."""
        dumped = self.model_dump(mode=mode)
        return {
            flat: dumped[where.component][where.field] if where.component else dumped[where.field]
            for flat, where in flat_fields().items()
        }

    # -- derived locations (one place, so nobody builds paths by hand) --------------------------
    @property
    def tables_root(self) -> str:
        return (self.tables_uri or str(self.data_dir / "delta")).rstrip("/")

    @property
    def tables_on_s3a(self) -> bool:
        """The Delta tables live on S3 through Hadoop's S3A connector (sessions then need it)."""
        return self.tables_root.startswith("s3a://")

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
    def redis_cluster_dir(self) -> Path:
        """The private Redis Cluster's nodes (LAMBDAREC_REDIS_CLUSTER=true without a URL)."""
        return self.data_dir / "redis-cluster"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the services lambdarec starts itself."""
        return self.data_dir / "run"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def registry_uri(self) -> str:
        return self.mlflow.registry_uri or self.tracking_uri

    @property
    def artifact_root(self) -> str:
        return self.mlflow.artifact_root or str(self.data_dir / "mlartifacts")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (tests, CLI flags) by flat name on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


# -- flat names ------------------------------------------------------------------------------------------
class FlatField(NamedTuple):
    """Where a flat name lives: `component` (None: a field of Settings itself) and its `field` there."""

    component: str | None
    field: str
    info: FieldInfo


_FLAT_FIELDS: dict[str, FlatField] = {}


def flat_fields() -> Mapping[str, FlatField]:
    """Every setting by its flat name, from `Component.flat_name`; two fields with one flat name (or a
    `flat_names` entry naming no field) are an error here."""
    if _FLAT_FIELDS:
        return _FLAT_FIELDS
    found: dict[str, FlatField] = {}
    for name, info in Settings.model_fields.items():
        component = info.annotation
        if not (isinstance(component, type) and issubclass(component, Component)):
            entries = [(name, FlatField(None, name, info))]
        else:
            if stray := set(component.flat_names) - set(component.model_fields):
                raise TypeError(f"{component.__name__}.flat_names names no field: {sorted(stray)}")
            entries = [
                (component.flat_name(field), FlatField(name, field, field_info))
                for field, field_info in component.model_fields.items()
            ]
        for flat, where in entries:
            if flat in found:
                raise TypeError(f"two settings have the flat name {flat!r}: {found[flat]} and {where}")
            found[flat] = where
    _FLAT_FIELDS.update(found)
    return _FLAT_FIELDS


class _FlatEnvironment(EnvSettingsSource):
    """LAMBDAREC_<FLAT NAME> of every setting, JSON-decoding lists, tuples and maps as pydantic-settings
    does, nested into the components; other LAMBDAREC_* variables are ignored."""

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for flat, (component, field, info) in flat_fields().items():
            env_name = f"{self.env_prefix}{flat.upper()}"
            raw = self.env_vars.get(env_name if self.case_sensitive else env_name.lower())
            if raw is None:
                continue
            try:
                value = self.prepare_field_value(flat, info, raw, False)
            except ValueError as exc:
                raise SettingsError(f'error parsing value for field "{flat}" from {env_name}') from exc
            (values.setdefault(component, {}) if component else values)[field] = value
        return values
