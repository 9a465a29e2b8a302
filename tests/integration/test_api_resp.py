"""serving.resp against a real redis-server: the pipelined reader returns what redis-py's pipeline
returns, keeps concurrent and abandoned requests in step, turns error replies into RedisErrors and
reconnects after the server drops it."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from pathlib import Path

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
    assert (reader.host, reader.port, reader.username, reader.password, reader.db, reader.path) == (
        "example",
        6400,
        None,
        "s@cret",
        3,
        None,
    )
    unix = PipelinedReader("unix:///run/redis.sock?db=2")
    assert (unix.path, unix.db) == ("/run/redis.sock", 2)
    with pytest.raises(ValueError, match="RedisPyReader"):
        PipelinedReader("http://example:6380/0")
    tls = PipelinedReader("rediss://api:pw@example:6380/1?ssl_ca_certs=&ssl_cert_reqs=none")
    assert (tls.username, tls.password, tls.db, tls.tls.verify_mode, tls.tls.check_hostname) == (
        "api",
        "pw",
        1,
        ssl.CERT_NONE,
        False,
    )
    assert PipelinedReader("redis://example:6379/0").tls is None


def seed(client) -> list[tuple]:
    client.set("a", b"\x01\x02")
    client.set("b", "text")
    client.hset("h", mapping={"f1": "1", "f2": "two"})
    client.zadd("z", {"x": 3.5, "y": 1.0, "w": 2.0})
    return [
        ("GET", "a"),
        ("MGET", "a", "missing", "b"),
        ("HGETALL", "h"),
        ("ZREVRANGE", "z", 0, 1, "WITHSCORES"),
        ("HMGET", "h", "f2", "nope"),
        ("GET", "missing"),
    ]


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
    assert (
        _hash(got[2]) == _hash(reference[2]) == {"f1": "1", "f2": "two"}
    )  # flat list here, a dict from redis-py
    assert _pairs(got[3]) == _pairs(reference[3]) == [("x", 3.5), ("w", 2.0)]
    assert got[4:] == reference[4:] == [[b"two", None], None]
    assert await PipelinedReader(redis_server.url).execute([]) == []


async def test_concurrent_and_abandoned_batches_stay_in_step(redis_server, redis_client):
    for n in range(50):
        redis_client.set(f"k{n}", n)
    reader = PipelinedReader(redis_server.url)
    try:
        got = await asyncio.gather(
            *[reader.execute([("GET", f"k{n}"), ("GET", f"k{n + 1}")]) for n in range(49)]
        )
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


def _tls_files(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl CLI."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    f = {
        name: folder / name
        for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "san.cnf")
    }
    f["san.cnf"].write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        str(f["ca.key"]),
        "-out",
        str(f["ca.pem"]),
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(f["server.key"]),
        "-out",
        str(f["server.csr"]),
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(f["server.csr"]),
        "-CA",
        str(f["ca.pem"]),
        "-CAkey",
        str(f["ca.key"]),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(f["san.cnf"]),
        "-out",
        str(f["server.pem"]),
    )
    return f


async def test_an_acl_user_over_tls_reads_through_both_readers(tmp_path):
    """The production shape: TLS and a per-component ACL user (here read-only on the store's keys)."""
    import redis
    import redis.asyncio as aioredis
    from redis.exceptions import AuthenticationError, NoPermissionError

    from lambdarec.redis_server import EmbeddedRedis, free_port

    files = _tls_files(tmp_path)
    tls_port = free_port()
    server = EmbeddedRedis(
        directory=tmp_path / "redis",
        extra_args=(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(files["server.pem"]),
            "--tls-key-file",
            str(files["server.key"]),
            "--tls-ca-cert-file",
            str(files["ca.pem"]),
            "--tls-auth-clients",
            "no",
            "--user",
            "api",
            "on",
            ">api-pw",
            "~lr:*",
            "+@read",
            "+@connection",
        ),
    ).start()
    url = f"rediss://api:api-pw@127.0.0.1:{tls_port}/0?ssl_ca_certs={files['ca.pem']}"
    try:
        admin = redis.Redis.from_url(server.url)
        admin.set("lr:a", b"one")
        admin.set("other", b"not yours")
        reader = PipelinedReader(url)
        client = aioredis.Redis.from_url(url)
        try:
            fast = await reader.execute([("GET", "lr:a"), ("MGET", "lr:a", "lr:missing")])
            reference = await RedisPyReader(client).execute([("GET", "lr:a"), ("MGET", "lr:a", "lr:missing")])
            assert fast == reference == [b"one", [b"one", None]]
            with pytest.raises(ResponseError, match="NOPERM"):
                await reader.execute([("GET", "other")])  # outside the user's keys
            with pytest.raises(NoPermissionError):
                await client.set("lr:a", b"two")  # a read-only user
        finally:
            await reader.aclose()
            await client.aclose()
        with pytest.raises(ResponseError, match="WRONGPASS"):
            await PipelinedReader(url.replace("api-pw", "guess")).execute([("GET", "lr:a")])
        with pytest.raises(AuthenticationError):
            redis.Redis.from_url(url.replace("api-pw", "guess")).get("lr:a")
        untrusted = PipelinedReader(
            f"rediss://api:api-pw@127.0.0.1:{tls_port}/0"
        )  # the system CAs do not know the test CA
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.execute([("GET", "lr:a")])
        admin.close()
    finally:
        server.stop()
