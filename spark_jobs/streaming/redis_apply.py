"""Applies one micro-batch's speed-layer operations to Redis, atomically per shard and idempotently.

Called by the speed job's `foreachBatch` with the operations `speed_features` planned. Each shard of
users (and the batch-level shard: trending, counters) is one Lua script call that first checks the
applied-batch marker `RedisKeys.applied_batch(query)[shard]`: when it is already at or above the batch
id, the call changes nothing. So replaying a batch after a crash, or retrying after Redis dropped the
connection halfway, never double counts. All shards of a batch go out in one pipelined round trip.

The script touches keys it derives from its arguments (co-visitation keys of items it finds in the
user's recent items), so it needs a single Redis (or one shard per hash slot on a Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from feature_store.redis_keys import RedisKeys
from spark_jobs.streaming import failpoints
from spark_jobs.streaming.redis_stream_source import retry_forever
from spark_jobs.streaming.speed_features import SpeedParams

BATCH_SHARD = "batch"

# ARGV: 1 applied-marker hash, 2 shard field, 3 batch id, 4 params (JSON), 5 operations (JSON).
# Returns {applied (1/0), redis time seconds, microseconds}: the moment the features became visible,
# on the same clock that stamped the bus entry ids.
APPLY_SHARD_LUA = """
local applied = redis.call('HGET', ARGV[1], ARGV[2])
if applied and tonumber(applied) >= tonumber(ARGV[3]) then
  local t = redis.call('TIME')
  return {0, t[1], t[2]}
end
local p = cjson.decode(ARGV[4])
local gap, ttl = p.gap_ms, p.ttl_s
local positive = {}
for _, name in ipairs(p.covisit_types) do positive[name] = true end
local touched = {}
local duplicate = false
for _, op in ipairs(cjson.decode(ARGV[5])) do
  local kind = op[1]
  if kind == 'd' then
    -- dedupe: an event id already among the user's latest counted ones is a re-sent copy, and the
    -- operations that follow for it (up to the next 'd' or 'u') are skipped
    duplicate = redis.call('ZADD', op[2], 'NX', op[4], op[3]) == 0
    if duplicate then
      redis.call('HINCRBY', p.status_key, 'duplicates', 1)
    elseif redis.call('ZCARD', op[2]) > p.dedupe_keep then
      redis.call('ZREMRANGEBYRANK', op[2], 0, -(p.dedupe_keep + 1))
    end
    redis.call('EXPIRE', op[2], p.dedupe_ttl_s)
  elseif duplicate and (kind == 'e' or kind == 'z') then
    -- a re-sent event counts once
  elseif kind == 'e' then
    local user, item, etype, ts, cat = op[2], op[3], op[4], op[5], op[6]
    local recent, meta, session, covisits = op[7], op[8], op[9], op[10]
    -- session counters: a gap longer than the session gap starts a new session; events older than
    -- the current session's reach are too late to count in it
    local last = tonumber(redis.call('HGET', session, 'last_ts'))
    if not last or ts >= last - gap then
      if not last or ts - last > gap then
        redis.call('DEL', session)
        redis.call('HSET', session, 'session_id', user .. ':' .. string.format('%d', ts))
        last = ts
      end
      redis.call('HINCRBY', session, 'type:' .. etype, 1)
      if cat ~= '' then redis.call('HINCRBY', session, 'cat:' .. cat, 1) end
      if ts > last then last = ts end
      redis.call('HSET', session, 'last_ts', string.format('%d', last))
    end
    -- co-visitation: the first time an item shows up positively in a session, pair it with the
    -- session's other positive items (a skipped item is not "seen together")
    local prev = tonumber(redis.call('ZSCORE', recent, item))
    local seen = prev and prev >= ts - gap and positive[redis.call('HGET', meta, item)]
    if covisits == 1 and not seen then
      local others = redis.call('ZREVRANGEBYSCORE', recent, ts, ts - gap, 'LIMIT', 0, p.covisit_items)
      local other_types = #others > 0 and redis.call('HMGET', meta, unpack(others)) or {}
      for i, other in ipairs(others) do
        if other ~= item and positive[other_types[i]] then
          local a, b = p.covisit_prefix .. item, p.covisit_prefix .. other
          redis.call('ZINCRBY', a, 1, other)
          redis.call('ZINCRBY', b, 1, item)
          touched[a] = true
          touched[b] = true
        end
      end
    end
    -- recent items: the latest event per item wins
    if not prev or ts >= prev then
      redis.call('ZADD', recent, ts, item)
      redis.call('HSET', meta, item, etype)
    end
  elseif kind == 'u' then
    duplicate = false
    local recent, meta, session = op[2], op[3], op[4]
    local extra = redis.call('ZCARD', recent) - p.recent_max
    if extra > 0 then
      for _, gone in ipairs(redis.call('ZRANGE', recent, 0, extra - 1)) do redis.call('HDEL', meta, gone) end
      redis.call('ZREMRANGEBYRANK', recent, 0, extra - 1)
    end
    redis.call('EXPIRE', recent, ttl)
    redis.call('EXPIRE', meta, ttl)
    redis.call('EXPIRE', session, ttl)
  elseif kind == 'z' then
    redis.call('ZINCRBY', op[2], op[4], op[3])
    redis.call('EXPIRE', op[2], op[5])
  elseif kind == 'h' then
    redis.call('HINCRBY', op[2], op[3], op[4])
  elseif kind == 'U' then
    local sources = {}
    for i = 4, #op do sources[#sources + 1] = op[i] end
    redis.call('ZUNIONSTORE', op[2], #sources, unpack(sources))
    redis.call('EXPIRE', op[2], op[3])
  else
    return redis.error_reply('unknown speed-layer operation ' .. tostring(kind))
  end
end
for key in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', key, 0, -(p.covisit_keep + 1))
  redis.call('EXPIRE', key, ttl)
end
redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])
local t = redis.call('TIME')
return {1, t[1], t[2]}
"""


@dataclass(frozen=True)
class ApplyResult:
    applied: int  # shards written by this call
    skipped: int  # shards an earlier attempt of the same batch id had already written
    visible_ms: int  # Redis time when the last shard's writes became visible


def script_params(keys: RedisKeys, params: SpeedParams) -> bytes:
    return orjson.dumps(
        {
            "gap_ms": params.session_gap_ms,
            "ttl_s": params.ttl_s,
            "recent_max": params.recent_items_max,
            "covisit_items": params.covisit_session_items,
            "covisit_keep": params.covisit_keep,
            "covisit_prefix": keys.covisit(""),
            "covisit_types": sorted(t for t, w in params.trend_weights.items() if w > 0),
            "dedupe_keep": params.dedupe_events_per_user,
            "dedupe_ttl_s": params.dedupe_ttl_s,
            "status_key": keys.speed_status,
        }
    )


def apply_batch(
    client,
    keys: RedisKeys,
    params: SpeedParams,
    query: str,
    batch_id: int,
    shards: Mapping[int, list[list[Any]]],
    batch_ops: list[list[Any]],
) -> ApplyResult:
    """Write one micro-batch: every user shard, then the batch-level shard, in one pipeline. Retries
    (the whole, idempotent pipeline) until Redis answers."""
    marker = keys.applied_batch(query)
    packed_params = script_params(keys, params)
    calls: Iterable[tuple[str, list[list[Any]]]] = [(str(s), ops) for s, ops in shards.items()]
    calls = [*calls, (BATCH_SHARD, batch_ops)]

    def send(part) -> list:
        pipe = client.pipeline(transaction=False)
        for shard, ops in part:
            pipe.eval(APPLY_SHARD_LUA, 0, marker, shard, batch_id, packed_params, orjson.dumps(ops))
        return pipe.execute()

    def run() -> list:
        if failpoints.armed(failpoints.REDIS_APPLY) is not None:
            # what a job that dies halfway through the pipeline leaves: the first half of the shards
            send(calls[: len(calls) // 2])
            failpoints.reach(failpoints.REDIS_APPLY)
        return send(calls)

    replies = retry_forever(run, f"applying micro-batch {batch_id}")
    applied = sum(int(r[0]) for r in replies)
    visible_ms = max(int(r[1]) * 1000 + int(r[2]) // 1000 for r in replies)
    return ApplyResult(applied, len(replies) - applied, visible_ms)


def catalog_categories(client, keys: RedisKeys, items: list[str]) -> dict[str, str]:
    """item -> category from the published batch's catalog (empty before the first batch publish)."""
    if not items:
        return {}

    def run() -> dict[str, str]:
        version = client.get(keys.batch_pointer)
        if version is None:
            return {}
        values = client.hmget(keys.item_categories(version.decode()), items)
        return {item: v.decode() for item, v in zip(items, values) if v is not None}

    return retry_forever(run, "reading the batch catalog")


def write_status(client, keys: RedisKeys, fields: Mapping[str, Any]) -> None:
    retry_forever(
        lambda: client.hset(keys.speed_status, mapping={k: str(v) for k, v in fields.items()}),
        "writing the status",
    )
