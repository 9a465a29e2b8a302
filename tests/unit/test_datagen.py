"""The synthetic generator: deterministic, exact counts, a manifest that matches the event contract,
and the structure later layers rely on (funnel, catalog, session intent, drift, new items)."""

import hashlib
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feature_store.events import BUS_ENTRY_REASONS, QuarantineReason, parse_event_time, validate_event_dict
from lambdarec.datagen import GeneratorConfig, GeneratorError, Manifest, generate

INGEST = datetime(2026, 11, 29, tzinfo=UTC)
SMALL = GeneratorConfig(events=4_000, users=80, items=120, days=6, new_items_per_day=3, seed=3)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def events_of(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for p in sorted((folder / "events").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    return folder, generate(SMALL, folder)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    config = GeneratorConfig(events=1_500, users=40, items=50, days=3, bad_fraction=0.1, shards=3, seed=5)
    generate(config, tmp_path / "a")
    generate(config, tmp_path / "b")
    generate(GeneratorConfig(**{**config.__dict__, "seed": 6}), tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (
        digest(tmp_path / "a")["events/part-00000.jsonl"] != digest(tmp_path / "c")["events/part-00000.jsonl"]
    )
    assert sorted(digest(tmp_path / "a")) == [
        "events/part-00000.jsonl",
        "events/part-00001.jsonl",
        "events/part-00002.jsonl",
        "items.jsonl",
        "manifest.json",
    ]


def test_manifest_counts_are_what_the_event_contract_finds(tmp_path):
    config = GeneratorConfig(events=3_000, users=50, items=60, days=4, bad_fraction=0.1, shards=2, seed=9)
    manifest = generate(config, tmp_path)
    found, copies = Counter(), Counter()
    lines = [
        line for p in sorted((tmp_path / "events").glob("*.jsonl")) for line in p.read_text().splitlines()
    ]
    for line in lines:
        try:
            decoded = json.loads(line)
        except ValueError:
            decoded = line
        event, reason, _ = validate_event_dict(decoded, now=INGEST, future_tolerance=timedelta(minutes=10))
        if reason is not None:
            found[reason.value] += 1
        else:
            copies[event.event_id] += 1
    found["duplicate_event_id"] = sum(n - 1 for n in copies.values() if n > 1)
    seen = set(copies)
    assert manifest.good_rows == len(seen) == 3_000
    assert {k: v for k, v in manifest.bad_rows.items() if v} == dict(found)
    assert set(found) == {
        r.value for r in QuarantineReason if r not in BUS_ENTRY_REASONS
    }  # every kind of bad row occurs
    assert manifest.rows_total == len(lines) == 3_000 + sum(found.values())
    assert 0.07 < manifest.bad_total / manifest.rows_total < 0.13
    assert Manifest.read(tmp_path).to_json() == manifest.to_json()


def test_events_reference_catalog_items_after_they_arrive_and_mix_ts_formats(clean):
    folder, manifest = clean
    catalog = {
        row["item_id"]: row for row in map(json.loads, (folder / "items.jsonl").read_text().splitlines())
    }
    assert len(catalog) == manifest.items > SMALL.items  # new items arrived
    assert all(
        set(row) == {"item_id", "category", "categories", "title", "attributes", "created_at"}
        for row in catalog.values()
    )
    assert all(row["category"] == row["categories"][0] for row in catalog.values())
    events = events_of(folder)
    for event in events:
        created = parse_event_time(catalog[event["item_id"]]["created_at"])
        assert created <= parse_event_time(event["ts"])
    start = datetime(2026, 10, 1, tzinfo=UTC)
    new_items_seen = {
        e["item_id"] for e in events if parse_event_time(catalog[e["item_id"]]["created_at"]) >= start
    }
    assert new_items_seen
    kinds = Counter(
        "millis" if isinstance(e["ts"], int) else ("Z" if e["ts"].endswith("Z") else "offset") for e in events
    )
    assert set(kinds) == {"millis", "Z", "offset"}
    assert Counter(e["event_type"] for e in events) == Counter(manifest.events_by_type)
    assert all(
        isinstance(e["value"], float)
        for e in events
        if e["event_type"] in ("rating", "purchase", "add_to_cart")
    )


def test_funnel_order_within_a_user_and_item(clean):
    folder, manifest = clean
    counts = manifest.events_by_type
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["rating"] > 0
    first_seen = defaultdict(dict)
    for e in sorted(events_of(folder), key=lambda e: parse_event_time(e["ts"])):
        first_seen[(e["user_id"], e["item_id"])].setdefault(e["event_type"], parse_event_time(e["ts"]))
    for steps in first_seen.values():
        for before, after in (("view", "click"), ("click", "add_to_cart"), ("add_to_cart", "purchase")):
            if after in steps:
                assert before in steps and steps[before] <= steps[after]


def sessions(events, gap=timedelta(minutes=30)):
    by_user = defaultdict(list)
    for e in events:
        if e["event_type"] == "view":
            by_user[e["user_id"]].append((parse_event_time(e["ts"]), e["item_id"]))
    for views in by_user.values():
        views.sort()
        current = [views[0]]
        for prev, cur in zip(views, views[1:]):
            if cur[0] - prev[0] >= gap:
                yield current
                current = []
            current.append(cur)
        yield current


def cluster_of(folder):
    return {
        row["item_id"]: row["attributes"]["cluster"]
        for row in map(json.loads, (folder / "items.jsonl").read_text().splitlines())
    }


def test_fresh_signals_carry_information_beyond_long_term_taste(clean):
    """The next view shares the cluster of the previous one far more often than a random view of the
    same user does: recent items and co-visitation predict what comes next."""
    folder, _ = clean
    clusters = cluster_of(folder)
    events = events_of(folder)
    next_same = next_total = 0
    for session in sessions(events):
        for (_, a), (_, b) in zip(session, session[1:]):
            next_total += 1
            next_same += clusters[a] == clusters[b]
    per_user = defaultdict(list)
    for e in events:
        if e["event_type"] == "view":
            per_user[e["user_id"]].append(clusters[e["item_id"]])
    baseline = sum(
        sum(n * n for n in Counter(cs).values()) / (len(cs) ** 2) * len(cs) for cs in per_user.values()
    ) / sum(len(cs) for cs in per_user.values())
    assert next_total > 500
    assert next_same / next_total > 2 * baseline


def category_shares(events, catalog_categories, lo, hi):
    shares = defaultdict(Counter)
    for e in events:
        day = (parse_event_time(e["ts"]) - datetime(2026, 10, 1, tzinfo=UTC)).days
        if lo <= day < hi:
            shares[e["user_id"]][catalog_categories[e["item_id"]]] += 1
    return shares


def mean_drift(folder):
    categories = {
        r["item_id"]: r["category"]
        for r in map(json.loads, (folder / "items.jsonl").read_text().splitlines())
    }
    events = events_of(folder)
    early, late = category_shares(events, categories, 0, 7), category_shares(events, categories, 21, 28)
    distances = []
    for user in set(early) & set(late):
        a, b = early[user], late[user]
        na, nb = sum(a.values()), sum(b.values())
        if na >= 20 and nb >= 20:
            distances.append(0.5 * sum(abs(a[c] / na - b[c] / nb) for c in set(a) | set(b)))
    return sum(distances) / len(distances)


def test_tastes_drift_over_days(tmp_path):
    base = dict(events=30_000, users=40, items=150, days=28, seed=4)
    drifting = mean_drift_of(tmp_path / "drift", GeneratorConfig(**base))
    steady = mean_drift_of(
        tmp_path / "steady", GeneratorConfig(**base, taste_drift=0.0, focus_change_rate=0.0)
    )
    assert drifting > steady + 0.15


def mean_drift_of(folder, config):
    generate(config, folder)
    return mean_drift(folder)


def test_streaming_writes_report_progress_and_bad_configs_are_rejected(tmp_path):
    calls = []
    generate(
        GeneratorConfig(events=5_000, users=30, items=30, days=2, seed=1),
        tmp_path,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[-1] == (5_000, 5_000)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    with pytest.raises(GeneratorError, match="bad_fraction must be in"):
        generate(GeneratorConfig(bad_fraction=0.9), tmp_path / "x")
    with pytest.raises(GeneratorError, match="shards must be >= 1"):
        generate(GeneratorConfig(shards=0), tmp_path / "y")
