"""The online store's read path on a Redis Cluster (`LAMBDAREC_REDIS_CLUSTER=true`).

Who uses it: `serving.app.open_reader` builds a `ClusterReader` instead of the one-connection
`serving.resp.PipelinedReader` when the store is a cluster; `serving.store.OnlineStore` reads through
it without knowing the difference (same `execute(commands) -> replies` contract).

A batch of commands is split by hash slot (an MGET over keys of several slots becomes one MGET per
slot: a cluster refuses cross-slot commands), the parts are grouped by the master that serves their
slot and sent as one pipelined batch per master, concurrently, each over that master's own
`PipelinedReader`; the replies are put back in the order of the commands (an MGET's values in the
order of its keys). So a request still costs one round trip per step, to each master it needs.

The slot map comes from CLUSTER SLOTS, read from the node the URL names (later from any known node)
when the reader first runs and again whenever a master answers MOVED or ASK (slots moved by a
resharding or a failover); the batch is then sent again, once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse, urlunparse

from redis.exceptions import RedisError, ResponseError

from feature_store.redis_cluster import SLOTS, key_slot
from serving.resp import Command, PipelinedReader

Node = tuple[str, int]  # (host, port) of a master
# Where a command's reply comes from: one part's whole reply, or (MGET) the value at each (part,
# position) in the order of the command's keys.
Assembly = int | list[tuple[int, int]]

# Commands whose one key is their first argument (what the store sends, and a few more reads).
SINGLE_KEY_COMMANDS = frozenset(
    {"GET", "HGET", "HGETALL", "HMGET", "ZRANGE", "ZREVRANGE", "ZSCORE", "ZCARD", "TTL", "EXISTS"}
)
_REDIRECTS = ("MOVED ", "ASK ")


def split_by_slot(
    commands: Sequence[Command], slot_of: Callable[[Any], int] = key_slot
) -> tuple[list[tuple[int, tuple]], list[Assembly]]:
    """Commands -> parts `(slot, command)` that each touch one slot, and how to rebuild each command's
    reply from the parts' replies (`assemble`). An MGET is split into one MGET per slot of its keys
    (keys in their order within a slot); other commands stay whole."""
    parts: list[tuple[int, tuple]] = []
    assembly: list[Assembly] = []
    for args in commands:
        name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
        if name == "MGET":
            by_slot: dict[int, list[int]] = defaultdict(list)
            for position, key in enumerate(args[1:]):
                by_slot[slot_of(key)].append(position)
            where: list[tuple[int, int] | None] = [None] * (len(args) - 1)
            for slot, positions in by_slot.items():
                for at, position in enumerate(positions):
                    where[position] = (len(parts), at)
                parts.append((slot, ("MGET", *[args[1 + p] for p in positions])))
            assembly.append(where)  # type: ignore[arg-type]
        elif name in SINGLE_KEY_COMMANDS:
            assembly.append(len(parts))
            parts.append((slot_of(args[1]), tuple(args)))
        else:
            raise ValueError(
                f"the cluster reader does not route {name}: add it to SINGLE_KEY_COMMANDS or split it"
            )
    return parts, assembly


def assemble(assembly: Sequence[Assembly], part_replies: Sequence[Any]) -> list:
    """The replies of the original commands, in their order, from the parts' replies."""
    return [
        part_replies[how] if isinstance(how, int) else [part_replies[part][at] for part, at in how]
        for how in assembly
    ]


def slot_owners(reply: Sequence[Any], asked_host: str) -> list[Node | None]:
    """A CLUSTER SLOTS reply -> the master of each of the 16384 slots (None: not served). A master
    listed without a host (empty or `?`) is on the host that was asked."""
    owners: list[Node | None] = [None] * SLOTS
    for entry in reply:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        node = (host if host not in ("", "?") else asked_host, int(master[1]))
        owners[start : end + 1] = [node] * (end - start + 1)
    return owners


def node_url(seed_url: str, host: str, port: int) -> str:
    """The seed URL with another host and port: same scheme, credentials, db and TLS options."""
    parsed = urlparse(seed_url)
    credentials = parsed.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunparse(parsed._replace(netloc=netloc))


def is_redirect(error: ResponseError) -> bool:
    return str(error).startswith(_REDIRECTS)


class ClusterReader:
    """Command batches over one `PipelinedReader` per master of a Redis Cluster (see the module
    docstring). `url`: redis:// or rediss:// URL of any node (credentials and TLS options are used for
    every node)."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(
                f"a Redis Cluster is reached by redis:// or rediss:// URLs, not {parsed.scheme}://"
            )
        self.url = url
        self.seed: Node = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.owners: list[Node | None] | None = None
        self.readers: dict[Node, PipelinedReader] = {}

    def _reader(self, node: Node) -> PipelinedReader:
        reader = self.readers.get(node)
        if reader is None:
            reader = self.readers[node] = PipelinedReader(node_url(self.url, *node))
        return reader

    async def refresh(self) -> None:
        """Read the slot map from the first node that answers: the known masters, then the seed."""
        error: Exception | None = None
        for node in [*self.readers, self.seed]:
            try:
                (reply,) = await self._reader(node).execute([("CLUSTER", "SLOTS")])
            except (OSError, RedisError) as exc:
                error = exc
                continue
            self.owners = slot_owners(reply, node[0])
            return
        raise error  # type: ignore[misc]

    async def _send(self, parts: list[tuple[int, tuple]]) -> list:
        owners = self.owners
        by_node: dict[Node, list[int]] = defaultdict(list)
        for index, (slot, _) in enumerate(parts):
            node = owners[slot]
            if node is None:
                raise ResponseError(f"CLUSTERDOWN hash slot {slot} is not served by any master")
            by_node[node].append(index)
        batches = [(self._reader(node), indexes) for node, indexes in by_node.items()]
        if len(batches) == 1:
            reader, indexes = batches[0]
            results = [await reader.execute([parts[i][1] for i in indexes])]
        else:
            results = await asyncio.gather(
                *[reader.execute([parts[i][1] for i in indexes]) for reader, indexes in batches]
            )
        replies: list = [None] * len(parts)
        for (_, indexes), batch_replies in zip(batches, results):
            for index, reply in zip(indexes, batch_replies):
                replies[index] = reply
        return replies

    async def execute(self, commands: Sequence[Command]) -> list:
        if not commands:
            return []
        if self.owners is None:
            await self.refresh()
        parts, assembly = split_by_slot(commands)
        try:
            replies = await self._send(parts)
        except ResponseError as exc:
            if not is_redirect(exc):
                raise
            await self.refresh()  # slots moved: read the map again and send the batch once more
            replies = await self._send(parts)
        return assemble(assembly, replies)

    async def aclose(self) -> None:
        for reader in self.readers.values():
            await reader.aclose()
        self.readers = {}
