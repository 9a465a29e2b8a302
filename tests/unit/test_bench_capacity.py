import orjson

from benchmarks.bench_capacity import marginal_costs, per_entity, speed_entries


def test_an_entity_costs_the_sum_of_its_kinds_mean_key_sizes():
    sizes = {
        ("batch_user", "recs"): {"keys": 4, "bytes": 1_000},
        ("batch_user", "feat"): {"keys": 5, "bytes": 600},
        ("batch_item", "feat"): {"keys": 2, "bytes": 300},
        ("batch_user", "seen"): {"keys": 0, "bytes": 0},
    }
    assert per_entity(sizes, "batch_user") == {
        "kinds": {
            "feat": {"keys": 5, "bytes": 600, "mean_bytes": 120.0},
            "recs": {"keys": 4, "bytes": 1_000, "mean_bytes": 250.0},
        },
        "bytes_per_entity": 370.0,
    }
    assert per_entity(sizes, "speed_user") == {"kinds": {}, "bytes_per_entity": 0}


def test_speed_entries_are_one_session_per_user_in_bus_order_with_their_wire_size():
    entries = speed_entries(["u1", "u2"], ["a", "b", "c"], per_user=3, now_ms=10_000_000, seed=1)
    assert len(entries) == 6
    assert [e[1] for e in entries] == sorted(e[1] for e in entries)
    events = [orjson.loads(raw) for _, _, raw, _ in entries]
    assert sorted(e["event_id"] for e in events) == [f"cap-{n}" for n in range(6)]
    assert {e["user_id"] for e in events} == {"u1", "u2"}
    assert all(10_000_000 - 3_500_000 <= e["ts"] < 10_000_000 for e in events)
    assert all(
        size == len(raw) and entry_id == f"{ts}-{raw_id[4:]}"
        for (entry_id, ts, raw, size), raw_id in zip(entries, (e["event_id"] for e in events))
    )
    for user in ("u1", "u2"):
        times = [e["ts"] for e in events if e["user_id"] == user]
        assert [b - a for a, b in zip(times, times[1:])] == [30_000, 30_000]


def test_marginal_costs_are_the_extra_seconds_per_extra_event_and_key():
    def run(events, keys, ingest, publish):
        return {
            "events_ingested": events,
            "users_with_recs": events // 100,
            "step_seconds": {"ingest": ingest, "publish": publish},
            "nightly_s": ingest + publish,
            "publish": {"keys_written": keys, "seconds": publish},
        }

    assert marginal_costs(run(50_000, 10_000, 30.0, 20.0), run(250_000, 50_000, 50.0, 28.0)) == {
        "events": 200_000,
        "users": 2_000,
        "nightly_core_seconds_per_thousand_users": 28.0,  # 28 s more x 2 cores / 2,000 more users x 1,000
        "keys": 40_000,
        # 20 s more for 200k more events on 2 cores: 200 s per million events per core
        "seconds_per_million_events_per_core": {"ingest": 200.0, "publish": 80.0, "nightly": 280.0},
        "publish_seconds_per_million_keys": 200.0,
    }
