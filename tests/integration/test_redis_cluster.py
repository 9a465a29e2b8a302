"""The online store on a real Redis Cluster (three masters of Debian's redis-server on loopback):
the speed layer's per-slot apply counts every event exactly once through lost replies and replays,
and the whole loop runs on it: publish a batch (the publish protocol's own functions) -> the API
answers -> events through POST /v1/events and the speed layer's apply -> a fresher answer; then a new
batch version is flipped to and the old one expires."""

from __future__ import annotations

import time

import pytest
import redis

from feature_store.codecs import decode_recs
from feature_store.events import EventTypes
from feature_store.redis_cluster import key_slot
from feature_store.redis_keys import RedisKeys
from feature_store.settings import Settings
from lambdarec.testing import shop_events, speed_feature_mismatches, speed_ground_truth
from serving.app import create_app
from spark_jobs.publish import (
    PublishTarget,
    encode_item_features,
    encode_item_similar,
    encode_user_affinity,
    encode_user_features,
    encode_user_recs,
    encode_user_seen,
    expire_old_versions,
    flip_pointer,
    persist_version,
    write_batch_globals,
    write_partition,
)
from spark_jobs.streaming.redis_apply import apply_batch_by_slot
from spark_jobs.streaming.speed_features import (
    SpeedEvent,
    SpeedParams,
    slot_ops,
    trend_weights,
    trending_ops,
)

pytestmark = pytest.mark.integration

KEYS = RedisKeys()


class LosesReplies:
    """The cluster client, except that the pipelines whose execution number (from 1) is in `lose`
    reach Redis and then lose their replies, as when the connection drops right after the writes."""

    def __init__(self, client, lose: set[int]) -> None:
        self.client, self.lose, self.executions = client, lose, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def pipeline(self, **options):
        pipe = self.client.pipeline(**options)
        execute = pipe.execute

        def execute_and_lose():
            replies = execute()
            self.executions += 1
            if self.executions in self.lose:
                raise redis.ConnectionError("the reply was lost")
            return replies

        pipe.execute = execute_and_lose
        return pipe


def speed_events(events: list[dict]) -> list[SpeedEvent]:
    return [
        SpeedEvent(
            f"{e['ts']}-0",
            e["event_id"],
            e["user_id"],
            e["item_id"],
            e["event_type"],
            e["ts"],
            e["ts"],
            e["context"]["category"],
        )
        for e in events
    ]


def test_the_per_slot_apply_counts_every_event_once_through_lost_replies_and_replays(cluster_client):
    params = SpeedParams(trend_weights=trend_weights(EventTypes()))
    t0 = int(time.time() * 1000) - 10 * 60_000
    events = shop_events(120, t0, users=12)
    resent = [events[5], events[40]]  # a client retry: the same event ids again, in a later batch
    batches = [events[0:40], events[40:80], events[80:120] + resent]

    def apply(client, batch_id: int, batch: list[dict]):
        planned = speed_events(batch)
        return apply_batch_by_slot(
            client,
            KEYS,
            params,
            "speed",
            batch_id,
            slot_ops(KEYS, params, planned),
            trending_ops(KEYS, params, planned),
        )

    users_slots = [len(slot_ops(KEYS, params, speed_events(b))) for b in batches]

    def first_batch_shared_slots(batch: list[dict]) -> set[int]:
        """Slots of the keys other than the users' that a first batch writes: co-visitation of the
        items it pairs, and the two trending windows (no re-sent event: the status is not touched)."""
        paired = speed_ground_truth(batch)["covisit"]
        return {key_slot(KEYS.covisit(i)) for i in paired} | {key_slot("15m"), key_slot("1h")}

    # batch 0: the users' step reached Redis, its reply was lost: the retry replays it (every slot
    # returns the operations it stored) and then applies the other keys' step once
    first = apply(LosesReplies(cluster_client, lose={1}), 0, batches[0])
    # batch 1: both steps reached Redis and the second reply was lost: the retry changes nothing
    second = apply(LosesReplies(cluster_client, lose={2}), 1, batches[1])
    third = apply(cluster_client, 2, batches[2])
    replayed = apply(cluster_client, 2, batches[2])  # the job died before Spark committed batch 2

    assert speed_feature_mismatches(cluster_client, KEYS, events) == []
    assert cluster_client.hget(KEYS.speed_status, "duplicates") == b"2"
    # the retry of batch 0 replayed every users' slot and applied each other slot once
    assert first.skipped == users_slots[0] and first.applied == len(first_batch_shared_slots(batches[0]))
    assert second.applied == 0  # the retry found every slot applied
    assert third.skipped == 0 and replayed.applied == 0 and replayed.skipped == third.applied
    # every master holds some of it: the operations really crossed nodes
    assert all(cluster_client.dbsize(target_nodes=node) > 0 for node in cluster_client.get_primaries())


def test_the_event_bus_appends_and_trims_below_the_committed_offsets_on_the_cluster(cluster_client):
    """The stream and its committed offsets share a slot, so the append-and-trim scripts run there."""
    from feature_store.event_bus import publish_events, read_committed, record_committed

    ids = publish_events(cluster_client, "lr:events", [{"n": i} for i in range(6)])
    record_committed(cluster_client, "lr:events", "speed", ids[4])
    record_committed(cluster_client, "lr:events", "bronze", ids[2])
    new = publish_events(cluster_client, "lr:events", [{"n": 9}], maxlen=1)  # too long: trims the committed

    assert read_committed(cluster_client, "lr:events") == {"speed": ids[4], "bronze": ids[2]}
    assert [e[0].decode() for e in cluster_client.xrange("lr:events")] == [*ids[2:], *new]


# -- the whole loop ----------------------------------------------------------------------------------
CATEGORIES = {"i1": "books", "i2": "books", "i3": "games", "i4": "games", "i5": "music", "i6": "music"}
CATEGORIES |= {"i7": "music", "i8": "music", "i9": "music"}
FEATURES = {"user_events_7d": 3.0}


class Accumulator:
    """What write_partition counts into (a Spark accumulator when Spark runs it)."""

    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> None:
        self.value += n


def publish(client, url: str, version: str, as_of: str, recs: dict[str, list[str]]) -> None:
    """A batch through the publish protocol's own functions, the rows handed over as Spark would hand
    a partition to the executors' writer: write every key of the version, flip, persist."""
    target = PublishTarget(url, "lr", version, pending_ttl_s=3600, cluster=True)
    sources = {f"cand_{s}": None for s in ("als", "covisit", "popular", "ease")}
    users = [
        {
            "user_id": user,
            "items": [{"item_id": i, "score": 1.0 - n / 10, **sources} for n, i in enumerate(items)],
            "features": FEATURES,
            "category_affinity": {"books": 1.0},
        }
        for user, items in recs.items()
    ]
    items = [
        {"item_id": i, "category": c, "features": {"item_events_7d": 1.0}} for i, c in CATEGORIES.items()
    ]
    similar = [{"item_id": "i5", "items": [{"item_id": "i6", "score": 0.5}]}]
    seen = [{"user_id": user, "items": ["i9"]} for user in recs]
    for rows, encode in (
        (users, encode_user_recs),
        (users, encode_user_features),
        (users, encode_user_affinity),
        (seen, encode_user_seen),
        (items, encode_item_features),
        (similar, encode_item_similar),
    ):
        write_partition(target, encode, Accumulator())(iter(rows))
    write_batch_globals(
        client, KEYS, version, 3600, CATEGORIES.items(), [("i7", 9.0), ("i8", 8.0)], {"as_of": as_of}, {}
    )
    assert flip_pointer(client, KEYS, version, as_of, published_at_s=time.time())
    persist_version(client, KEYS, version)


def answer(body: dict) -> dict[str, tuple[str, str | None]]:
    return {item["item_id"]: (item["source"], item["because"]) for item in body["items"]}


async def test_publish_serve_event_fresher_answer_on_the_cluster(
    redis_cluster, cluster_client, tmp_path, empty_registry, run_speed_layer, running
):
    settings = Settings(
        data_dir=tmp_path,
        redis_url=redis_cluster.url,
        redis_cluster=True,
        mlflow_tracking_uri=f"sqlite:///{empty_registry / 'mlflow.db'}",
        mlflow_artifact_root=str(empty_registry / "mlartifacts"),
        model_poll_interval_s=3600,
        serving_redis_budget_s=1.0,
    )
    now = int(time.time() * 1000)
    publish(cluster_client, redis_cluster.url, "v1", "2026-12-01", {"u1": ["i1", "i2", "i3"]})
    event = {"user_id": "u9", "event_type": "view", "context": {"category": "music"}}
    app = create_app(settings)
    async with running(app) as api:
        # another user's session pairs i5 with i8 (co-visitation, written by the speed layer)
        earlier = [
            {**event, "user_id": "u8", "event_id": f"p{n}", "item_id": i, "ts": now - 5000 + n}
            for n, i in enumerate(["i5", "i8"])
        ]
        assert (await api.post("/v1/events", json={"events": earlier})).status_code == 202
        assert run_speed_layer(cluster_client, settings, batch_id=0) == 2
        known = (await api.get("/v1/recommendations/u1", params={"k": 3})).json()
        before = (await api.get("/v1/recommendations/u9", params={"k": 10})).json()
        mine = [
            {**event, "event_id": "e1", "item_id": "i5", "ts": now - 2000},
            {
                **event,
                "event_id": "e2",
                "item_id": "i3",
                "event_type": "click",
                "ts": now - 1000,
                "context": None,
            },
        ]
        posted = await api.post("/v1/events", json={"events": mine})
        assert (posted.status_code, posted.json()["accepted"]) == (202, 2)
        assert run_speed_layer(cluster_client, settings, batch_id=1) == 4  # the bus holds both posts
        after = (await api.get("/v1/recommendations/u9", params={"k": 10})).json()
        assert run_speed_layer(cluster_client, settings, batch_id=1) == 4  # replayed: changes nothing
        replayed = (await api.get("/v1/recommendations/u9", params={"k": 10})).json()
        # a new batch version: the pointer flips, serving follows, the old version expires
        publish(cluster_client, redis_cluster.url, "v2", "2026-12-02", {"u1": ["i4", "i6"]})
        flipped = (await api.get("/v1/recommendations/u1", params={"k": 3})).json()
        masters = len(app.state.services.store.reader.readers)

    assert (known["batch_version"], list(answer(known))) == ("v1", ["i1", "i2", "i3"])
    assert (before["batch_version"], answer(before)) == (
        "v1",
        {"i5": ("trending", None), "i8": ("trending", None), "i7": ("popular", None)},
    )  # no history: what is trending, topped up from popularity (i8 is trending too)
    assert answer(after) == {
        "i6": ("similar", "i5"),  # the batch's similar items of the item just viewed
        "i8": ("covisit", "i5"),  # the speed layer's co-visitation neighbour of it
        "i7": ("popular", None),
    }  # i5 and i3 were just consumed
    assert replayed == after
    assert cluster_client.hgetall(KEYS.session_counters("u9")) == {
        b"session_id": f"u9:{now - 2000}".encode(),
        b"last_ts": str(now - 1000).encode(),
        b"type:view": b"1",
        b"type:click": b"1",
        b"cat:music": b"1",
        b"cat:games": b"1",  # i3's category from the published catalog
    }
    assert cluster_client.zrange(KEYS.covisit("i5"), 0, -1, withscores=True) == [(b"i3", 1.0), (b"i8", 1.0)]
    assert (flipped["batch_version"], answer(flipped)) == (
        "v2",
        {"i4": ("batch", None), "i6": ("batch", None), "i5": ("trending", None)},  # i5: viewed by u8 and u9
    )
    assert masters == 3  # the requests' reads went to every master
    assert [i for i, *_ in decode_recs(cluster_client.get(KEYS.user_recs("v2", "u1")))] == ["i4", "i6"]
    assert cluster_client.ttl(KEYS.user_recs("v2", "u1")) == -1  # persisted by the flip
    assert expire_old_versions(cluster_client, KEYS, keep=1, grace_s=600) == ["v1"]
    v1_keys = list(cluster_client.scan_iter(match=KEYS.batch_namespace_pattern("v1")))
    assert len(v1_keys) == 4 + 9 + 1 + 3  # u1's 4, 9 items' features, i5's similar, 3 global keys
    assert {0 < cluster_client.ttl(k) <= 600 for k in v1_keys} == {True}


def test_the_cli_starts_one_shared_cluster_per_data_directory_and_stops_it(tmp_path):
    """`lambdarec redis-cluster start|stop` (what infra/local/redis-cluster.sh runs): three masters in
    cluster mode serving every slot, found again by a second start, gone after stop."""
    import json

    from typer.testing import CliRunner

    from feature_store.redis_cluster import open_redis
    from lambdarec.cli import build_app

    env = {"LAMBDAREC_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    started = runner.invoke(build_app(), ["redis-cluster", "start"], env=env)
    state = json.loads((tmp_path / "run" / "redis-cluster.json").read_text())
    try:
        again = runner.invoke(build_app(), ["redis-cluster", "start"], env=env)
        client = open_redis(started.output.strip(), cluster=True)
        masters = sorted(node.port for node in client.get_primaries())
        info = client.cluster_info(target_nodes=client.get_random_node())
        client.close()
    finally:
        stopped = runner.invoke(build_app(), ["redis-cluster", "stop"], env=env)

    assert started.exit_code == 0 and started.output.strip() == f"redis://127.0.0.1:{state['ports'][0]}/0"
    assert again.output == started.output  # the running cluster, not a second one
    assert masters == sorted(state["ports"]) and len(masters) == 3
    assert (info["cluster_state"], info["cluster_slots_ok"], info["cluster_known_nodes"]) == (
        "ok",
        "16384",
        "3",
    )
    assert stopped.output == "stopped the Redis Cluster\n"
    assert not (tmp_path / "run" / "redis-cluster.json").exists()


async def test_the_cluster_reader_splits_per_slot_and_follows_moved_slots(redis_cluster, cluster_client):
    """A stale slot map (every slot on one master, as after a resharding) costs one MOVED, a reload of
    the map and one resend; the replies come back in the commands' order."""
    from feature_store.redis_cluster import SLOTS
    from serving.cluster import ClusterReader

    cluster_client.mset_nonatomic({f"k{i}": f"v{i}" for i in range(20)})
    cluster_client.hset("h", mapping={"a": "1", "b": "2"})
    reader = ClusterReader(redis_cluster.url)
    await reader.refresh()
    masters = set(reader.owners)
    reader.owners = [reader.owners[0]] * SLOTS
    commands = [("MGET", *[f"k{i}" for i in range(20)], "missing"), ("GET", "k3"), ("HMGET", "h", "b", "c")]
    try:
        replies = await reader.execute(commands)
        again = await reader.execute(commands)
    finally:
        await reader.aclose()

    assert replies == [[*[f"v{i}".encode() for i in range(20)], None], b"v3", [b"2", None]]
    assert again == replies
    assert len(masters) == 3 and set(reader.owners) == masters  # the map was read again
