"""Delta Lake table layout (medallion): names, partitioning, schemas and how each table is written.

Producers (spark_jobs) and readers (benchmarks, replay, DAG checks) use these declarations instead of
spelling paths or columns by hand. Paths are relative to `Settings.tables_root`
(`settings.table_path(table.name)`). Schemas are Spark DDL strings so that this module does not
import pyspark (serving imports feature_store and must not start a JVM).
"""

from __future__ import annotations

from dataclasses import dataclass

from feature_store.events import event_spark_ddl


@dataclass(frozen=True)
class Table:
    name: str  # layout name and relative path, e.g. "bronze/events"
    ddl: str  # Spark DDL of the columns
    partition_by: tuple[str, ...]
    write_mode: str  # how jobs write it: "merge-insert", "replace-partition", ...
    description: str

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(part.strip().split(" ", 1)[0] for part in _split_ddl(self.ddl))


def _split_ddl(ddl: str) -> list[str]:
    """Split a DDL string on top-level commas (MAP<STRING, STRING> has a comma inside)."""
    parts, depth, current = [], 0, []
    for ch in ddl:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


BRONZE_EVENTS = Table(
    name="bronze/events",
    ddl=f"{event_spark_ddl()}, source STRING, ingest_time TIMESTAMP, event_date DATE",
    partition_by=("event_date",),
    write_mode="merge-insert on event_id (re-ingest adds nothing)",
    description="The immutable master dataset: every good event exactly once, as it arrived, plus ingest time.",
)

QUARANTINE = Table(
    name="bronze/quarantine",
    ddl="raw STRING, reason STRING, detail STRING, source STRING, ingest_time TIMESTAMP, ingest_date DATE, row_key STRING",
    partition_by=("ingest_date",),
    write_mode="merge-insert on row_key (sha2 of source, raw and the n-th identical line; re-ingest adds nothing)",
    description="Every rejected row with its reason (feature_store.events.QuarantineReason) and a detail.",
)

ITEMS = Table(
    name="bronze/items",
    ddl="item_id STRING, category STRING, categories ARRAY<STRING>, title STRING, "
    "attributes MAP<STRING, STRING>, created_at TIMESTAMP",
    partition_by=(),
    write_mode="merge-upsert on item_id",
    description="The item catalog: main category, all categories, title (text), free attributes.",
)

USERS = Table(
    name="bronze/users",
    ddl="user_id STRING, attributes MAP<STRING, STRING>",
    partition_by=(),
    write_mode="merge-upsert on user_id",
    description="Optional user attributes.",
)

INTERACTIONS = Table(
    name="silver/interactions",
    ddl="event_id STRING, user_id STRING, item_id STRING, event_type STRING, ts TIMESTAMP, value DOUBLE, "
    "context MAP<STRING, STRING>, weight DOUBLE, rating DOUBLE, is_explicit BOOLEAN, label INT, "
    "session_id STRING, event_date DATE",
    partition_by=("event_date",),
    write_mode="replace-partition (replaceWhere event_date in [start, end))",
    description="Cleaned, deduped, labeled, sessionized interactions. weight = implicit-feedback weight of the "
    "event type (ratings: rating - threshold + 1, clipped at 0 below); rating = explicit value or null; "
    "label = 1 positive, 0 negative; session_id = user_id + ':' + epoch ms of the session's first event.",
)

USER_FEATURES = Table(
    name="gold/user_features",
    ddl="as_of DATE, user_id STRING, features MAP<STRING, DOUBLE>, category_affinity MAP<STRING, DOUBLE>, "
    "genre_profile MAP<STRING, DOUBLE>",
    partition_by=("as_of",),
    write_mode="replace-partition (replaceWhere as_of in [start, end))",
    description="Per user, as of 00:00 UTC of `as_of`, from events strictly before it "
    "(feature_store.features.USER_FEATURES names the keys of `features`; feature_store.genres defines "
    "`genre_profile`).",
)

ITEM_FEATURES = Table(
    name="gold/item_features",
    ddl="as_of DATE, item_id STRING, category STRING, features MAP<STRING, DOUBLE>, genres ARRAY<STRING>",
    partition_by=("as_of",),
    write_mode="replace-partition (replaceWhere as_of in [start, end))",
    description="Per item, as of 00:00 UTC of `as_of`, from events strictly before it "
    "(feature_store.features.ITEM_FEATURES names the keys of `features`; `genres`: "
    "feature_store.genres.item_genres of its catalogue entry).",
)

CANDIDATES = Table(
    name="gold/candidates",
    ddl="as_of DATE, source STRING, user_id STRING, item_id STRING, score DOUBLE, rank INT",
    partition_by=("as_of", "source"),
    write_mode="replace-partition (as_of, source)",
    description="Candidate items per user from each source (feature_store.ranking.CANDIDATE_SOURCES), with the "
    "source's score and rank; and each pool scorer's (POOL_SCORERS) view of every proposed item it indexes: "
    "its score relative to the user's best in the pool (null when that best is not positive) and its rank there.",
)

TRAINING_SET = Table(
    name="gold/training_set",
    ddl="as_of DATE, user_id STRING, item_id STRING, features ARRAY<DOUBLE>, relevance DOUBLE",
    partition_by=("as_of",),
    write_mode="replace-partition (as_of)",
    description="Candidates x labels from [as_of, as_of + horizon); features in the order of "
    "feature_store.features.RANKER_FEATURES, computed only from data before as_of.",
)

ITEM_SIMILAR = Table(
    name="gold/item_similar",
    ddl="as_of DATE, item_id STRING, similar_item_id STRING, score DOUBLE, rank INT",
    partition_by=("as_of",),
    write_mode="replace-partition (as_of)",
    description="Nearest items per item from co-visitation within sessions before as_of (published as `sim`, "
    "and what the covisit candidate source expands a user's history with).",
)

BATCH_SCORES = Table(
    name="gold/batch_scores",
    ddl="as_of DATE, user_id STRING, item_id STRING, score DOUBLE, rank INT, sources ARRAY<STRING>, "
    "model_version STRING",
    partition_by=("as_of",),
    write_mode="replace-partition (as_of)",
    description="Top-N items per active user scored by the @champion ranker; what is published to Redis.",
)

ALL_TABLES: tuple[Table, ...] = (
    BRONZE_EVENTS,
    QUARANTINE,
    ITEMS,
    USERS,
    INTERACTIONS,
    USER_FEATURES,
    ITEM_FEATURES,
    CANDIDATES,
    ITEM_SIMILAR,
    TRAINING_SET,
    BATCH_SCORES,
)
