"""Applies one micro-batch's speed-layer operations to Redis, atomically per shard and idempotently.

Called by the speed job's `foreachBatch` with the operations `speed_features` planned. Each shard of
users (and the batch-level shard: trending, counters) is one Lua script call that first checks the
applied-batch marker `RedisKeys.applied_batch(query)[shard]`: when it is already at or above the batch
id, the call changes nothing. So replaying a batch after a crash, or retrying after Redis dropped the
connection halfway, never double counts. All shards of a batch go out in one pipelined round trip.

On a Redis Cluster a script may touch only the keys of one hash slot, but a user's events also change
keys of other slots (co-visitation of items, trending buckets, the status counters), so
`apply_batch_by_slot` applies a batch in two idempotent steps, each one script per slot with its own
applied marker in that slot (`RedisKeys.applied_slot`, a hash tag computed for the slot):
1. per slot of users (`speed_features.slot_ops`): the script updates the users' keys and, instead of
   writing the other slots' keys, returns those operations ("derived") and stores them beside its
   marker; a replay of an applied slot returns the stored ones, so a crash between the steps loses none;
2. per slot of the other keys: the derived operations of every user slot, then the batch-level ones,
   grouped by their key's slot (`shared_slot_ops`), each group applied once.
The same script runs all of it (mode `apply`: every operation here; mode `defer`: the other slots'
ones returned), so one Redis and a cluster count alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from feature_store.redis_cluster import group_by_slot, key_slot
from feature_store.redis_keys import RedisKeys
from spark_jobs.streaming import failpoints
from spark_jobs.streaming.redis_stream_source import retry_forever
from spark_jobs.streaming.speed_features import SpeedParams

BATCH_SHARD = "batch"

# KEYS: 1 applied-marker hash (its slot is the slot of every key the script may touch on a cluster).
# ARGV: 1 marker field, 2 batch id, 3 params (JSON), 4 operations (JSON), 5 mode: `apply` writes every
# operation; `defer` writes only the user keys and returns the operations on other keys (trending
# buckets `z`, counters `h`, co-visitation `c`) as JSON, also kept in field `<field>:out` of the marker
# so that a replay of the batch returns them again; 6 the marker's TTL in seconds (0: none).
# Returns {applied (1/0), redis time seconds, microseconds[, deferred operations (JSON)]}: the moment
# the features became visible, on the same clock that stamped the bus entry ids.
APPLY_SHARD_LUA = """
local marker, field, batch = KEYS[1], ARGV[1], ARGV[2]
local defer = ARGV[5] == 'defer'
local applied = redis.call('HGET', marker, field)
if applied and tonumber(applied) >= tonumber(batch) then
  local t = redis.call('TIME')
  if not defer then return {0, t[1], t[2]} end
  local out = '[]'
  if tonumber(applied) == tonumber(batch) then out = redis.call('HGET', marker, field .. ':out') or '[]' end
  return {0, t[1], t[2], out}
end
local p = cjson.decode(ARGV[3])
local gap, ttl = p.gap_ms, p.ttl_s
local positive = {}
for _, name in ipairs(p.covisit_types) do positive[name] = true end
local touched = {}
local deferred = {}
-- an operation on a key that may live in another slot: written here, or returned (mode `defer`)
local function shared(op)
  if defer then
    deferred[#deferred + 1] = op
  elseif op[1] == 'z' then
    redis.call('ZINCRBY', op[2], op[4], op[3])
    redis.call('EXPIRE', op[2], op[5])
  elseif op[1] == 'h' then
    redis.call('HINCRBY', op[2], op[3], op[4])
  else -- 'c': co-visitation, trimmed to the strongest once the script is done
    redis.call('ZINCRBY', op[2], 1, op[3])
    touched[op[2]] = true
  end
end
local duplicate = false
for _, op in ipairs(cjson.decode(ARGV[4])) do
  local kind = op[1]
  if kind == 'd' then
    -- dedupe: an event id already among the user's latest counted ones is a re-sent copy, and the
    -- operations that follow for it (up to the next 'd' or 'u') are skipped
    duplicate = redis.call('ZADD', op[2], 'NX', op[4], op[3]) == 0
    if duplicate then
      shared({'h', p.status_key, 'duplicates', 1})
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
    -- session's other positive items (a skipped item is not "seen together"). Within the gap on both
    -- sides: an event that reaches the bus after the user's later ones (a client's resent batch) pairs
    -- with them as it would have in event-time order; in order, nothing later is there yet.
    local prev = tonumber(redis.call('ZSCORE', recent, item))
    local seen = prev and prev >= ts - gap and positive[redis.call('HGET', meta, item)]
    if covisits == 1 and not seen then
      local others = redis.call('ZREVRANGEBYSCORE', recent, ts + gap, ts - gap, 'LIMIT', 0, p.covisit_items)
      local other_types = #others > 0 and redis.call('HMGET', meta, unpack(others)) or {}
      for i, other in ipairs(others) do
        if other ~= item and positive[other_types[i]] then
          shared({'c', p.covisit_prefix .. item, other})
          shared({'c', p.covisit_prefix .. other, item})
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
  elseif kind == 'z' or kind == 'h' or kind == 'c' then
    shared(op)
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
redis.call('HSET', marker, field, batch)
if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', marker, ARGV[6]) end
local t = redis.call('TIME')
if not defer then return {1, t[1], t[2]} end
local out = #deferred > 0 and cjson.encode(deferred) or '[]'
redis.call('HSET', marker, field .. ':out', out)
return {1, t[1], t[2], out}
"""
APPLY = "apply"
DEFER = "defer"
USERS_FIELD = "users"  # the fields of a slot's marker (apply_batch_by_slot): its users' step,
SHARED_FIELD = "shared"  # and the step of every other key in the slot


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
            pipe.eval(APPLY_SHARD_LUA, 1, marker, shard, batch_id, packed_params, orjson.dumps(ops), APPLY, 0)
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


def shared_slot_ops(ops: Iterable[list[Any]]) -> dict[int, list[list[Any]]]:
    """Operations on single keys (`z`, `h`, `c`: the key second; `U`: a window and its buckets, one
    slot) grouped by their key's hash slot, in the order they came within each slot."""
    return group_by_slot(ops, slot_of=lambda op: key_slot(op[1]))


def apply_batch_by_slot(
    client,
    keys: RedisKeys,
    params: SpeedParams,
    query: str,
    batch_id: int,
    user_slots: Mapping[int, list[list[Any]]],
    batch_ops: list[list[Any]],
) -> ApplyResult:
    """Write one micro-batch on a Redis Cluster (`client`: redis.RedisCluster): the users' step per
    slot (`user_slots`: speed_features.slot_ops), then what it derived for other slots and `batch_ops`
    per slot of their keys (see the module docstring). Each step is a pipeline that the cluster client
    splits per node; retried whole (every script is idempotent) until Redis answers."""
    packed_params = script_params(keys, params)
    users = list(user_slots.items())

    def send(sha: str, calls, field: str, mode: str) -> list:
        pipe = client.pipeline(transaction=False)
        for slot, ops in calls:
            marker = keys.applied_slot(query, slot)
            # EVALSHA by name: redis-py's cluster pipeline refuses its evalsha() but routes the command
            pipe.execute_command(
                "EVALSHA",
                sha,
                1,
                marker,
                field,
                batch_id,
                packed_params,
                orjson.dumps(ops),
                mode,
                params.ttl_s,
            )
        return pipe.execute() if calls else []

    def run() -> list:
        sha = client.script_load(APPLY_SHARD_LUA)  # on every master
        if failpoints.armed(failpoints.REDIS_APPLY) is not None:
            # what a job that dies halfway through the users' step leaves: half of the user slots
            send(sha, users[: len(users) // 2], USERS_FIELD, DEFER)
            failpoints.reach(failpoints.REDIS_APPLY)
        user_replies = send(sha, users, USERS_FIELD, DEFER)
        derived = [op for reply in user_replies for op in orjson.loads(reply[3])]
        shared = shared_slot_ops([*derived, *batch_ops])
        return user_replies + send(sha, list(shared.items()), SHARED_FIELD, APPLY)

    replies = retry_forever(run, f"applying micro-batch {batch_id}")
    applied = sum(int(r[0]) for r in replies)
    visible_ms = max((int(r[1]) * 1000 + int(r[2]) // 1000 for r in replies), default=0)
    return ApplyResult(applied, len(replies) - applied, visible_ms)


def clear_applied_markers(client, keys: RedisKeys, query: str) -> None:
    """Forget every batch id `query` applied (its checkpoint is new: batch ids start again at 0), the
    per-shard hash of one Redis and the per-slot markers of a cluster (on every master)."""
    client.delete(keys.applied_batch(query))
    for marker in client.scan_iter(match=keys.applied_slots_pattern(query), count=1000):
        client.delete(marker)


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
