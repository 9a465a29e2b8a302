"""The online store's read path: batches of Redis commands in one round trip, two ways.

Who uses it: `serving.store.OnlineStore` (every read of a request, prefetch and readiness), built by
`serving.app.build_services`. Both readers take a list of commands (argument tuples) and return the
raw RESP2 replies in order (bytes, lists, integers; HGETALL as a flat list), raising a RedisError for
an error reply or a lost connection, OSError when Redis cannot be reached.

- `PipelinedReader` (default, `ServingSwitches.fast_redis`): one connection per API process, an
  asyncio.Protocol parsing with hiredis. Concurrent requests write their commands as they come and
  the replies are matched to them in order (Redis answers a connection in order), so requests
  pipeline on the one socket without a pool, locks or per-command callbacks. A request that gives up
  (its time budget ran out) leaves its place in the queue and its replies are read and dropped, so
  the connection stays in step. A lost connection fails what is waiting and the next batch reconnects.
  A round trip costs a few microseconds of CPU instead of the ~80 µs of redis-py's asyncio client,
  which matters at hundreds of requests per second on two cores.
- `RedisPyReader`: the same through redis-py's pipeline (the "off" switch).

Both take their connection options from the URL, as every other Redis client of lambdarec does
(`redis.Redis.from_url`): an ACL user and password (`redis://user:password@host`), the db, and TLS with
`rediss://` and the query options `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`
(`required` by default, `optional`, `none`) and `ssl_check_hostname`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Command = Sequence[Any]  # ("GET", key), ("MGET", *keys), ...


def pack_commands(commands: Sequence[Command]) -> bytes:
    """RESP2 encoding of `commands` (str as UTF-8, int as decimal, bytes as they are)."""
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = b"%d" % arg
            elif isinstance(arg, float):
                arg = repr(arg).encode()
            out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


def _checked(replies: list) -> list:
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
    return replies


class _Waiting:
    __slots__ = ("future", "expected", "replies")

    def __init__(self, future: asyncio.Future, expected: int) -> None:
        self.future = future
        self.expected = expected
        self.replies: list = []


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.waiting: deque[_Waiting] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        parser, waiting = self.parser, self.waiting
        parser.feed(data)
        try:
            while waiting:
                reply = parser.gets()
                if reply is False:  # RESP2 has no boolean: False means "no complete reply yet"
                    return
                head = waiting[0]
                head.replies.append(reply)
                if len(head.replies) == head.expected:
                    waiting.popleft()
                    if not head.future.done():  # done: cancelled by its request's time budget
                        head.future.set_result(head.replies)
        except hiredis.ProtocolError as exc:
            self._fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self.waiting:
            head = self.waiting.popleft()
            if not head.future.done():
                head.future.set_exception(error)

    def send(self, payload: bytes, expected: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(future, expected))
        self.transport.write(payload)
        return future


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_TRUE = ("1", "true", "yes", "on")


def tls_context(query: dict[str, list[str]]) -> ssl.SSLContext:
    """The TLS context of a rediss:// URL, from the query options redis-py reads too."""

    def option(name: str) -> str | None:
        return query.get(name, [None])[0]

    reqs = (option("ssl_cert_reqs") or "required").lower()
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs={reqs!r} in the Redis URL: use one of {', '.join(_CERT_REQS)}")
    context = ssl.create_default_context(cafile=option("ssl_ca_certs"))
    context.check_hostname = reqs != "none" and (option("ssl_check_hostname") or "true").lower() in _TRUE
    context.verify_mode = _CERT_REQS[reqs]
    if option("ssl_certfile"):
        context.load_cert_chain(option("ssl_certfile"), option("ssl_keyfile"))
    return context


class PipelinedReader:
    """Command batches over one pipelined connection (see the module docstring). `url` is a
    redis://, rediss:// or unix:// URL (username, password, db and TLS options honoured)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"PipelinedReader speaks redis://, rediss:// or unix:// URLs, not {parsed.scheme}://; use RedisPyReader"
            )
        query = parse_qs(parsed.query)
        self.tls = tls_context(query) if parsed.scheme == "rediss" else None
        self.path = parsed.path if parsed.scheme == "unix" else None
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None
        db = query.get("db", [None])[0] or (parsed.path.lstrip("/") if parsed.scheme != "unix" else None)
        self.db = int(db) if db else 0
        self._connection: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._connection is not None and not self._connection.closed:
                return self._connection
            loop = asyncio.get_running_loop()
            if self.path is not None:
                _, connection = await loop.create_unix_connection(_Connection, self.path)
            else:
                _, connection = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
            setup: list[Command] = []
            if self.password is not None:
                setup.append(
                    ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                )
            if self.db:
                setup.append(("SELECT", self.db))
            if setup:
                try:
                    _checked(await connection.send(pack_commands(setup), len(setup)))
                except BaseException:
                    connection.transport.close()
                    raise
            self._connection = connection
            return connection

    async def execute(self, commands: Sequence[Command]) -> list:
        if not commands:
            return []
        connection = await self._connect()
        return _checked(await connection.send(pack_commands(commands), len(commands)))

    async def aclose(self) -> None:
        if self._connection is not None and self._connection.transport is not None:
            self._connection.transport.close()
        self._connection = None


class RedisPyReader:
    """Command batches through redis-py's pipeline (raw replies: no response callbacks applied by
    `execute_command` for the commands the store sends, except HGETALL, returned as a dict)."""

    def __init__(self, client) -> None:
        self.client = client

    async def execute(self, commands: Sequence[Command]) -> list:
        if not commands:
            return []
        pipe = self.client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        return await pipe.execute()

    async def aclose(self) -> None:  # the client belongs to the app
        return None
