"""The Redis key layout of the online store: the only place keys are spelled.

The table in docs/redis-key-layout.md documents every key; a unit test keeps the two in step.

- Batch keys live in a versioned namespace `<p>:b:<version>:...`. Publish writes a whole version, then
  flips the pointer `<p>:batch:current`; readers resolve the pointer first, so they see the old or the
  new batch, never a mix. Old versions expire (`<p>:batch:versions` lists them).
- Speed keys `<p>:s:...` carry TTLs and are written idempotently per micro-batch.
- All keys of one user share the hash tag `{u:<user_id>}` so Redis Cluster keeps them in one slot and
  one pipelined round trip serves a request. The other keys that one command or script uses together
  share a slot too: a trending window and its buckets (`{<window>}`), the event stream and its
  committed offsets (the stream's name as tag), a slot's applied marker and that slot's keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from feature_store.redis_cluster import slot_tag

# What a key is, for sizing the store (benchmarks.bench_capacity): per user, per item or global, and its
# kind (the last part of its name). Matched in order; every key method's output has one match.
_KIND_PATTERNS: tuple[tuple[str, str], ...] = (
    ("batch_user", r":b:[^:]+:\{u:.+\}:(\w+)$"),
    ("batch_item", r":b:[^:]+:i:.+:(\w+)$"),
    ("batch_global", r":b:[^:]+:(\w+)$"),
    ("speed_user", r":s:\{u:.+\}:(\w+)$"),
    ("speed_item", r":s:(covisit):.+$"),
    ("speed_global", r":s:(trending):\{[^}]+\}(?::\d+)?$"),
)


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "lr"

    def kind_of(self, key: str) -> tuple[str, str] | None:
        """(scope, kind) of a key of this prefix, e.g. `("batch_user", "recs")` for a `user_recs` key and
        `("speed_global", "trending")` for a window or one of its buckets; None for the other keys
        (pointers, markers, status)."""
        if not key.startswith(self.prefix + ":"):
            return None
        rest = key[len(self.prefix) :]
        for scope, pattern in _KIND_PATTERNS:
            match = re.match(pattern, rest)
            if match:
                return scope, match.group(1)
        return None

    # -- batch namespace (versioned) ---------------------------------------------------------
    @property
    def batch_pointer(self) -> str:
        """String: the current published batch version."""
        return f"{self.prefix}:batch:current"

    @property
    def batch_versions(self) -> str:
        """Sorted set: published versions scored by publish time (for expiry and rollback)."""
        return f"{self.prefix}:batch:versions"

    def batch_meta(self, version: str) -> str:
        """Hash: as_of, model name/version, counts, published_at of one batch version."""
        return f"{self.prefix}:b:{version}:meta"

    def user_recs(self, version: str, user_id: str) -> str:
        """Bytes (codecs.encode_recs): the user's top-N batch items with score and source."""
        return f"{self.prefix}:b:{version}:{{u:{user_id}}}:recs"

    def user_pool_inputs(self, version: str, user_id: str) -> str:
        """Bytes (codecs.encode_feature_rows): per batch item of `user_recs`, in its order, the pool
        scorers' inputs (`ranking.POOL_INPUTS` order, NaN: missing)."""
        return f"{self.prefix}:b:{version}:{{u:{user_id}}}:pool"

    def user_features(self, version: str, user_id: str) -> str:
        """Bytes (codecs.encode_features): the user's gold features in `ranking.USER_INPUTS` order."""
        return f"{self.prefix}:b:{version}:{{u:{user_id}}}:feat"

    def user_category_affinity(self, version: str, user_id: str) -> str:
        """Bytes (msgpack map): category -> the user's share of weight in it before the batch's as_of."""
        return f"{self.prefix}:b:{version}:{{u:{user_id}}}:aff"

    def user_genre_profile(self, version: str, user_id: str) -> str:
        """Bytes (msgpack map): genre -> its share of the user's weight (feature_store.genres)."""
        return f"{self.prefix}:b:{version}:{{u:{user_id}}}:genres"

    def user_history(self, version: str, user_id: str) -> str:
        """Bytes (codecs.encode_ids): items the user consumed before the batch (excluded from answers)."""
        return f"{self.prefix}:b:{version}:{{u:{user_id}}}:seen"

    def item_features(self, version: str, item_id: str) -> str:
        """Bytes (codecs.encode_features): the item's gold features in `ranking.ITEM_INPUTS` order."""
        return f"{self.prefix}:b:{version}:i:{item_id}:feat"

    def item_genres(self, version: str, item_id: str) -> str:
        """Bytes (codecs.encode_ids): the item's genres (feature_store.genres.item_genres); absent: none."""
        return f"{self.prefix}:b:{version}:i:{item_id}:genres"

    def item_similar(self, version: str, item_id: str) -> str:
        """Bytes (codecs.encode_recs): the item's nearest items from the batch layer (co-visitation/ALS)."""
        return f"{self.prefix}:b:{version}:i:{item_id}:sim"

    def item_categories(self, version: str) -> str:
        """Hash: item_id -> category, for diversity caps and category context."""
        return f"{self.prefix}:b:{version}:categories"

    def popular(self, version: str) -> str:
        """Bytes (codecs.encode_recs): most popular items of the batch, the cold-start fallback."""
        return f"{self.prefix}:b:{version}:popular"

    def batch_namespace_pattern(self, version: str) -> str:
        """SCAN pattern of every key of one batch version (expiry)."""
        return f"{self.prefix}:b:{version}:*"

    # -- speed layer (TTL'd, idempotent per micro-batch) ---------------------------------------
    def recent_items(self, user_id: str) -> str:
        """Sorted set: member = item_id, score = event time (epoch ms) of the user's latest event on it;
        trimmed to the last N. Hash `recent_meta` holds item -> event type."""
        return f"{self.prefix}:s:{{u:{user_id}}}:recent"

    def recent_meta(self, user_id: str) -> str:
        """Hash: item_id -> event type of the user's latest event on that item."""
        return f"{self.prefix}:s:{{u:{user_id}}}:recent_meta"

    def session_counters(self, user_id: str) -> str:
        """Hash: counters of the user's current session, fields `type:<event_type>` and `cat:<category>`,
        plus `session_id` and `last_ts`."""
        return f"{self.prefix}:s:{{u:{user_id}}}:session"

    def recent_event_ids(self, user_id: str) -> str:
        """Sorted set: member = event_id, score = bus time (epoch ms) of the user's latest events counted
        by the speed layer (last `speed_dedupe_events_per_user`, TTL `speed_dedupe_ttl_s`): a re-sent
        event whose id is here counts once."""
        return f"{self.prefix}:s:{{u:{user_id}}}:event_ids"

    def trending(self, window: str) -> str:
        """Sorted set: item_id -> event weight in the sliding window (`15m`, `1h`); hash tag `{<window>}`,
        shared with its buckets, since it is recomputed as their union (ZUNIONSTORE: one slot)."""
        return f"{self.prefix}:s:trending:{{{window}}}"

    def trending_bucket(self, window: str, bucket: int) -> str:
        """Sorted set: item_id -> weight in one time bucket of a window (summed into `trending`)."""
        return f"{self.prefix}:s:trending:{{{window}}}:{bucket}"

    def covisit(self, item_id: str) -> str:
        """Sorted set: item_id -> co-visitation weight with `item_id` in recent sessions."""
        return f"{self.prefix}:s:covisit:{item_id}"

    def applied_batch(self, query: str) -> str:
        """Hash: partition -> last micro-batch id applied to Redis by streaming query `query` (idempotency)."""
        return f"{self.prefix}:s:applied:{query}"

    def applied_slot(self, query: str, slot: int) -> str:
        """Hash (on a Redis Cluster): step -> last micro-batch id streaming query `query` applied to the
        keys of hash slot `slot`, and `<step>:out` -> what that step derived for other slots. Its hash
        tag puts it in `slot` itself, so one script checks it and writes that slot's keys."""
        return f"{self.prefix}:s:applied:{query}:{{{slot_tag(slot)}}}"

    def applied_slots_pattern(self, query: str) -> str:
        """SCAN pattern of every `applied_slot` marker of a query (cleared with a fresh checkpoint)."""
        return f"{self.prefix}:s:applied:{query}:*"

    def stream_committed(self, stream: str) -> str:
        """Hash: streaming query -> the last event-bus entry id it committed (trim only below the lowest).
        Named after the stream itself (not the prefix), so a publisher needs only the stream name; its
        hash tag is the stream's own name, so trimming (one script over both) stays in the stream's slot."""
        return f"{stream}:{{{stream}}}:committed"

    @property
    def speed_status(self) -> str:
        """Hash: processed, quarantined, last_batch_id, lag_ms_p50/p99, updated_at of the streaming job."""
        return f"{self.prefix}:s:status"

    @property
    def speed_heartbeat(self) -> str:
        """String `<host>:<pid>` of the running streaming job, with a TTL it renews every second: the job
        is alive, on whichever host, exactly while this key exists."""
        return f"{self.prefix}:s:heartbeat"

    @property
    def speed_stop_request(self) -> str:
        """String: the heartbeat identity (`<host>:<pid>`) of the job asked to stop cleanly, from any host
        (`lambdarec stream stop --remote`); the named job deletes it and exits, a later job ignores it."""
        return f"{self.prefix}:s:stop-request"

    # -- serving -------------------------------------------------------------------------------
    @property
    def model_pointer(self) -> str:
        """Hash: name, version, backend and loaded_at of the ranker the serving layer loaded last."""
        return f"{self.prefix}:serving:model"
