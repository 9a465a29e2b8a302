"""The production Redis ACL users (infra/production/docker-compose.yml's redis command, the same rules
as k8s/redis.yaml) on a real redis-server: each component can run the commands it uses on the store's
keys, and nothing else."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import redis
import yaml
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from feature_store.settings import project_root
from lambdarec.redis_server import free_port

pytestmark = pytest.mark.integration

PASSWORDS = {
    "REDIS_API_PASSWORD": "api-pw",
    "REDIS_STREAM_PASSWORD": "stream-pw",
    "REDIS_BATCH_PASSWORD": "batch-pw",
}


def production_redis_args() -> list[str]:
    compose = yaml.safe_load((project_root() / "infra" / "production" / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"

    def resolve(word: str) -> str:
        word = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: PASSWORDS[m.group(1)], word)
        return re.sub(r"\$\{\w+:-[^}]*\}", "64mb", word)

    return [resolve(w) for w in command[1:] if w not in ("--appendonly", "yes")]


def connect(port: int, user: str, password: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, username=user, password=password)


def test_each_component_user_runs_its_commands_on_the_store_keys_only(tmp_path):
    # Started by hand: EmbeddedRedis waits for an unauthenticated PING, which `default off` refuses.
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
            *production_redis_args(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        api = connect(port, "api", "api-pw")
        deadline = time.monotonic() + 10
        while True:  # readiness: the server answers the api user
            try:
                api.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, (
                    "redis-server did not start with the production ACL"
                )
                time.sleep(0.05)
        stream, batch = connect(port, "stream", "stream-pw"), connect(port, "batch", "batch-pw")

        # batch: writes a version with TTLs, flips under WATCH, persists, scans, expires
        pipe = batch.pipeline(transaction=False)
        pipe.set("lr:b:v1:u:{u:1}:recs", b"x", ex=60).hset(
            "lr:b:v1:meta", mapping={"as_of": "2026-01-01"}
        ).expire("lr:b:v1:meta", 60)
        pipe.execute()
        with batch.pipeline(transaction=True) as tx:
            tx.watch("lr:batch:current")
            tx.get("lr:batch:current")
            tx.multi()
            tx.set("lr:batch:current", "v1")
            tx.zadd("lr:batch:versions", {"v1": 1})
            tx.execute()
        assert sorted(batch.scan_iter(match="lr:b:v1:*")) == [b"lr:b:v1:meta", b"lr:b:v1:u:{u:1}:recs"]
        assert batch.persist("lr:b:v1:meta") and batch.expire("lr:b:v1:u:{u:1}:recs", 30, nx=False)

        # the API: pipelined reads, the event bus, the model pointer
        pipe = api.pipeline(transaction=False)
        pipe.get("lr:batch:current").mget("lr:b:v1:u:{u:1}:recs", "lr:missing").hgetall(
            "lr:b:v1:meta"
        ).zrevrange("lr:batch:versions", 0, -1)
        assert pipe.execute()[0] == b"v1"
        api.xadd("lr:events", {"event": "{}"})
        api.hset("lr:model", mapping={"version": "1"})

        # the stream job: reads the bus, trims it, applies features with Lua
        assert len(stream.xrange("lr:events")) == 1
        assert stream.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", 1, "lr:s:{u:1}:n", 2) == 2
        sha = stream.script_load("return redis.call('GET', KEYS[1])")
        assert stream.evalsha(sha, 1, "lr:s:{u:1}:n") == b"2"
        stream.xtrim("lr:events", maxlen=0, approximate=False)

        # and nothing else: other keys, admin commands, scripts for the API, no anonymous access
        for client in (api, stream, batch):
            with pytest.raises(NoPermissionError):
                client.get("not-ours")
            with pytest.raises(NoPermissionError):
                client.flushall()
            with pytest.raises(NoPermissionError):
                client.config_get("maxmemory")
        with pytest.raises(NoPermissionError):
            api.eval("return 1", 0)
        with pytest.raises((AuthenticationError, ResponseError)):
            redis.Redis(host="127.0.0.1", port=port).get("lr:batch:current")
        with pytest.raises(AuthenticationError):
            connect(port, "api", "guess").ping()
        for client in (api, stream, batch):
            client.close()
    finally:
        process.terminate()
        process.wait(10)
