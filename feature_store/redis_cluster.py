"""What every Redis client of lambdarec needs to run on a Redis Cluster as well as on one Redis.

- `open_redis` / `open_async_redis`: a redis-py client for `LAMBDAREC_REDIS_URL`, a plain one or, with
  `LAMBDAREC_REDIS_CLUSTER=true`, a cluster client that discovers the nodes from the one the URL names
  and routes every command (and every pipeline, split per node) by hash slot.
- `key_slot`: the hash slot of a key (CRC16 of the hash tag, or of the whole key without one), the
  rule by which multi-key operations (MGET, MULTI/EXEC, Lua scripts) are grouped: on a cluster each
  must stay within one slot.
- `slot_tag`: a hash tag that lands in a given slot, for keys that must live beside the keys of a slot
  whatever their own names (the speed layer's per-slot applied markers).

Who calls it: spark_jobs (publish, the speed layer's apply, the stream source), serving (the API's
client and its cluster reader), lambdarec (the composition root, the CLI).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

SLOTS = 16384
T = TypeVar("T", bound=Hashable)


def key_slot(key: str | bytes) -> int:
    """Redis Cluster's hash slot of `key`: CRC16 of the text inside the first `{...}` when that is not
    empty, else of the whole key, modulo 16384."""
    from redis.crc import key_slot as crc_slot

    return crc_slot(key.encode() if isinstance(key, str) else key)


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    # The smallest decimal number hashing to each slot: ~110k CRCs, computed once per process.
    import binascii

    table: list[str | None] = [None] * SLOTS
    left, n = SLOTS, 0
    while left:
        slot = binascii.crc_hqx(str(n).encode(), 0) % SLOTS
        if table[slot] is None:
            table[slot] = str(n)
            left -= 1
        n += 1
    return tuple(table)  # type: ignore[arg-type]


def slot_tag(slot: int) -> str:
    """A hash tag (without braces) whose keys land in `slot`: `key_slot("{" + slot_tag(s) + "}") == s`."""
    if not 0 <= slot < SLOTS:
        raise ValueError(f"a hash slot is in [0, {SLOTS}), not {slot}")
    return _slot_tags()[slot]


def group_by_slot(keys: Iterable[T], slot_of=key_slot) -> dict[int, list[T]]:
    """The keys by hash slot, each group in the order the keys came (slots in order of first key)."""
    groups: dict[int, list[T]] = defaultdict(list)
    for key in keys:
        groups[slot_of(key)].append(key)
    return dict(groups)


def open_redis(url: str, cluster: bool = False, **options: Any):
    """A redis-py client for `url` (any option redis-py's `from_url` takes): `redis.RedisCluster`
    when `cluster`, else `redis.Redis`."""
    import redis

    if cluster:
        return redis.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def open_async_redis(url: str, cluster: bool = False, **options: Any):
    """`open_redis` for asyncio: `redis.asyncio.RedisCluster` or `redis.asyncio.Redis`."""
    import redis.asyncio as aioredis

    if cluster:
        return aioredis.RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)
