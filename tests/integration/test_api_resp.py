"""serving.resp against a real redis-server: the pipelined reader returns what redis-py's pipeline
returns, keeps concurrent and abandoned requests in step, turns error replies into RedisErrors and
reconnects after the server drops it."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from serving.resp import PipelinedReader, RedisPyReader, pack_commands
from serving.store import _hash, _pairs


def test_pack_commands_is_resp2():
    assert pack_commands([("GET", "k"), ("ZREVRANGE", "z", 0, -1, "WITHSCORES"), ("SET", b"\x00b", 1.5)]) == (
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        b"*5\r\n$9\r\nZREVRANGE\r\n$1\r\nz\r\n$1\r\n0\r\n$2\r\n-1\r\n$10\r\nWITHSCORES\r\n"
        b"*3\r\n$3\r\nSET\r\n$2\r\n\x00b\r\n$3\r\n1.5\r\n"
    )


def test_url_parsing():
    reader = PipelinedReader("redis://:s%40cret@example:6400/3")
    assert (reader.host, reader.port, reader.username, reader.password, reader.db, reader.path) == ("example", 6400, None, "s@cret", 3, None)
    unix = PipelinedReader("unix:///run/redis.sock?db=2")
    assert (unix.path, unix.db) == ("/run/redis.sock", 2)
    with pytest.raises(ValueError, match="RedisPyReader"):
        PipelinedReader("rediss://example:6380/0")


def seed(client) -> list[tuple]:
    client.set("a", b"\x01\x02")
    client.set("b", "text")
    client.hset("h", mapping={"f1": "1", "f2": "two"})
    client.zadd("z", {"x": 3.5, "y": 1.0, "w": 2.0})
    return [("GET", "a"), ("MGET", "a", "missing", "b"), ("HGETALL", "h"), ("ZREVRANGE", "z", 0, 1, "WITHSCORES"),
            ("HMGET", "h", "f2", "nope"), ("GET", "missing")]


async def test_pipelined_reader_returns_what_redis_py_returns(redis_server, redis_client):
    import redis.asyncio as aioredis

    commands = seed(redis_client)
    fast = PipelinedReader(redis_server.url)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        got, reference = await fast.execute(commands), await RedisPyReader(client).execute(commands)
    finally:
        await fast.aclose()
        await client.aclose()
    assert got[:2] == reference[:2] == [b"\x01\x02", [b"\x01\x02", None, b"text"]]
    assert _hash(got[2]) == _hash(reference[2]) == {"f1": "1", "f2": "two"}  # flat list here, a dict from redis-py
    assert _pairs(got[3]) == _pairs(reference[3]) == [("x", 3.5), ("w", 2.0)]
    assert got[4:] == reference[4:] == [[b"two", None], None]
    assert await PipelinedReader(redis_server.url).execute([]) == []


async def test_concurrent_and_abandoned_batches_stay_in_step(redis_server, redis_client):
    for n in range(50):
        redis_client.set(f"k{n}", n)
    reader = PipelinedReader(redis_server.url)
    try:
        got = await asyncio.gather(*[reader.execute([("GET", f"k{n}"), ("GET", f"k{n + 1}")]) for n in range(49)])
        assert got == [[str(n).encode(), str(n + 1).encode()] for n in range(49)]
        abandoned = asyncio.create_task(reader.execute([("GET", "k1"), ("GET", "k2")]))
        await asyncio.sleep(0)  # the batch is written; its replies are on their way
        abandoned.cancel()
        with pytest.raises(asyncio.CancelledError):
            await abandoned
        assert await reader.execute([("GET", "k7")]) == [b"7"]  # not k1's or k2's reply
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await reader.execute([("GET", "k3"), ("HGETALL", "k3")])
        assert await reader.execute([("GET", "k8")]) == [b"8"]
    finally:
        await reader.aclose()


async def test_reconnects_after_the_server_drops_the_connection(redis_server, redis_client):
    redis_client.set("k", "v")
    reader = PipelinedReader(redis_server.url)
    try:
        assert await reader.execute([("CLIENT", "SETNAME", "lambdarec-serving")]) == [b"OK"]
        assert redis_client.client_kill_filter(_type="normal", skipme=True) >= 1
        deadline = time.monotonic() + 10
        while not reader._connection.closed:  # the loop sees the close when it reads the socket
            assert time.monotonic() < deadline, "the dropped connection was never noticed"
            await asyncio.sleep(0.01)
        assert await reader.execute([("GET", "k")]) == [b"v"]
    finally:
        await reader.aclose()


async def test_unreachable_server_is_an_os_error():
    from lambdarec.redis_server import free_port

    reader = PipelinedReader(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(OSError):
        await reader.execute([("GET", "k")])
    with pytest.raises((RedisConnectionError, OSError)):
        await reader.execute([("GET", "k")])
