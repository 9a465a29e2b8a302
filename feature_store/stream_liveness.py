"""The streaming job's liveness contract: one home for the job that keeps it and the commands that read it.

- A job's identity is `<host>:<pid>` (`job_identity`).
- Its lease is `RedisKeys.speed_heartbeat` = its identity with TTL `stream_heartbeat_ttl_s`, renewed
  every second (`renew_heartbeat`) and dropped on a clean stop only while it is still its own
  (`end_heartbeat`): a job is alive, on any host, while its lease lasts (`current_heartbeat`).
- A lease naming a process of this host that is gone does not count (`live_identity`): a job killed here
  leaves its lease for up to its TTL, and a restart right after must not wait for it.
- A stop request is `RedisKeys.speed_stop_request` = the identity of the job asked to stop
  (`request_stop`); only that job takes it (`stop_requested`), so a request outlasting its job never
  stops the next one.

Renewing and ending are best effort: Redis may be restarting, and the next second tells the truth again.
"""

from __future__ import annotations

import logging
import os
import socket

from feature_store.redis_keys import RedisKeys

log = logging.getLogger(__name__)

# Delete a key only while it holds this job's identity (another job's lease or request stays).
_DELETE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def job_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def renew_heartbeat(client, keys: RedisKeys, identity: str, ttl_s: float) -> None:
    import redis

    try:
        client.set(keys.speed_heartbeat, identity, px=int(ttl_s * 1000))
    except redis.RedisError as exc:
        log.warning("could not renew the streaming heartbeat: %s", exc)


def end_heartbeat(client, keys: RedisKeys, identity: str) -> None:
    import redis

    try:
        client.eval(_DELETE_IF_OURS, 1, keys.speed_heartbeat, identity)
    except redis.RedisError as exc:
        log.warning("could not end the streaming heartbeat: %s", exc)


def current_heartbeat(client, keys: RedisKeys) -> str:
    """The identity the lease names, "" when no job renews it."""
    return (client.get(keys.speed_heartbeat) or b"").decode()


def live_identity(heartbeat: str) -> str | None:
    """The lease's identity, unless it names a process of this host that is gone."""
    import psutil

    host, _, pid = heartbeat.rpartition(":")
    if not heartbeat or (host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))):
        return None
    return heartbeat


def request_stop(client, keys: RedisKeys, identity: str, ttl_s: float) -> None:
    client.set(keys.speed_stop_request, identity, px=int(ttl_s * 1000))


def stop_requested(client, keys: RedisKeys, identity: str) -> bool:
    """Whether a stop request names this job (taking it)."""
    import redis

    try:
        return bool(client.eval(_DELETE_IF_OURS, 1, keys.speed_stop_request, identity))
    except redis.RedisError:
        return False
