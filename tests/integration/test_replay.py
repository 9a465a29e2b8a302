"""A tiny replay through the real layers: Spark/Delta batch at T, a real redis-server, the real
streaming query, the real serving app (in-process), with small model settings.

The data carry a speed-layer signal by construction: items come in pairs (a_i, b_i) and whoever views
a_i views b_i half a minute later. After T six users each play a pair they never touched. When b_j is
asked about, the user's newest recent item must be a_j and the speed-only neighbours heuristic must put
b_j first (those questions are the ones asked in the middle of a session): had the replay asked
before the streaming job applied a_j, both would fail, so this proves the catch-up wait. Batch + speed must have used real-time co-visitation candidates; the batch-only
store must answer the same whatever the slice size (the speed layer never writes it).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.long]

CUTOFF = date(2026, 10, 11)
PAIRS, FILLERS, USERS, DAYS_BEFORE = 30, 40, 40, 12
HORIZON_DAYS = 3  # the nightly job trains on [T-2h, T-h) and evaluates on [T-h, T): 12 days are enough
TEST_USERS = 6


def own_pairs(user: int) -> list[int]:
    return [(3 * user + n) % PAIRS for n in range(3)]


def unseen_pair(user: int) -> int:
    return (3 * user + 15) % PAIRS  # never among own_pairs(user) (3 * user + {0, 1, 2})


def write_events(path: Path) -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """Events before and after T as JSON lines; returns each test user's (a_j, b_j) and the expected
    targets: (user, item) of held-out views of items new to their user."""
    rng = random.Random(5)
    t_cut = datetime.combine(CUTOFF, datetime.min.time(), tzinfo=UTC)
    rows: list[dict] = []

    def view(user: int, item: str, at: datetime, kind: str = "view") -> None:
        rows.append(
            {
                "event_id": f"e{len(rows)}",
                "user_id": f"u{user}",
                "item_id": item,
                "event_type": kind,
                "ts": int(at.timestamp() * 1000),
            }
        )

    for day in range(DAYS_BEFORE):
        for user in range(USERS):
            at = (
                t_cut
                - timedelta(days=DAYS_BEFORE - day)
                + timedelta(hours=8, minutes=user * 7 + rng.randrange(5))
            )
            pair = rng.choice(own_pairs(user))
            view(user, f"f{rng.randrange(FILLERS)}", at)
            view(user, f"a{pair}", at + timedelta(seconds=40))
            view(user, f"b{pair}", at + timedelta(seconds=70))
            view(user, f"b{pair}", at + timedelta(seconds=80), "click")
    expected = {}
    before = {(r["user_id"], r["item_id"]) for r in rows}
    for user in range(TEST_USERS):
        at = t_cut + timedelta(hours=9, minutes=user * 10)
        pair = unseen_pair(user)
        view(user, f"a{pair}", at)
        view(user, f"b{pair}", at + timedelta(seconds=30))
        view(
            USERS - 1 - user, f"f{rng.randrange(FILLERS)}", at + timedelta(seconds=45)
        )  # someone else, meanwhile
        expected[f"u{user}"] = [f"a{pair}", f"b{pair}"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "events.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    categories = [{"item_id": f"{kind}{i}", "category": f"c{i % 5}"} for kind in "ab" for i in range(PAIRS)]
    categories += [{"item_id": f"f{i}", "category": "filler"} for i in range(FILLERS)]
    (path / "items.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in categories))
    held_out = {(r["user_id"], r["item_id"]) for r in rows[-3 * TEST_USERS :]}
    return expected, held_out - before


def test_replay_through_the_real_layers(spark, settings, tmp_path: Path):
    from lambdarec.replay.runner import ReplayOptions, ServingVariant, run_replay

    pairs, targets = write_events(tmp_path / "input")
    options = ReplayOptions(
        source=tmp_path / "input" / "events.jsonl",
        format="jsonl",
        cutoff=CUTOFF,
        k=10,
        slice_s=(0.0, 3600.0),
        max_targets=None,
        warmup_days=7.0,
        keep_answers=True,
        variants=(ServingVariant.parse("no_neighbours:speed:serving_recent_items=0"),),
    )
    small = settings.updated(
        label_horizon_days=HORIZON_DAYS,
        active_user_days=14,
        candidates_per_source=30,
        als_ranks=(8,),
        als_max_iters=(5,),
        ranker_trees=30,
        ranker_max_depth=4,
        max_negatives_per_query=20,
        batch_top_n=20,
    )
    result = run_replay(spark, small, options, tmp_path / "work", now=datetime(2026, 11, 1, tzinfo=UTC))

    assert result["cutoff"] == "2026-10-11"
    assert (result["events_held_out"], result["warmup_events"]) == (3 * TEST_USERS, 7 * USERS * 4)
    assert result["targets_eligible"] == result["targets_asked"] == len(targets)
    assert result["batch"]["report"]["publish"]["version"]
    fine, coarse = result["passes"]
    for one in (fine, coarse):
        answers = {(a["user_id"], a["item_id"]): a for a in one["answers"]}
        assert set(answers) == targets
        for user, (a_item, b_item) in pairs.items():
            b = answers[(user, b_item)]
            assert b["recent"][0] == a_item  # the streaming job had applied a_j before the question
            assert b["ranks"]["speed_neighbours"] == 1
        assert one["models"]["batch_speed"]["degraded"] == one["models"]["batch_only"]["degraded"] == 0
        assert one["models"]["batch_speed"]["asked"] == len(targets)
        assert one["freshness_ms"]["samples"] == one["rounds"]
        assert one["batch_speed_sources"].get("covisit", 0) > 0
        # b_j follows a_j by 30 s (in a session); every other target is its user's first event of the day
        moments = one["by_moment"]["speed_neighbours"]
        assert (moments["in_session"]["asked"], moments["in_session"]["hr"]) == (TEST_USERS, 1.0)
        assert moments["session_start"]["asked"] == len(targets) - TEST_USERS
        # the ablation is asked the same questions and compared question by question
        hits = {
            name: [float(a["ranks"][name] is not None) for a in one["answers"]]
            for name in ("batch_speed", "no_neighbours")
        }
        diffs = [full - ablated for full, ablated in zip(hits["batch_speed"], hits["no_neighbours"])]
        assert one["batch_speed_minus_variant"]["no_neighbours"]["hr@10"]["mean"] == pytest.approx(
            sum(diffs) / len(diffs)
        )
        assert one["models"]["no_neighbours"]["asked"] == len(targets)
        # and every single-source answer the same way
        for source in ("popularity", "speed_neighbours", "speed_trending"):
            hits[source] = [float(a["ranks"][source] is not None) for a in one["answers"]]
            diffs = [full - alone for full, alone in zip(hits["batch_speed"], hits[source])]
            assert one["batch_speed_minus_single_source"][source]["hr@10"]["mean"] == pytest.approx(
                sum(diffs) / len(diffs)
            )
    # the batch-only store and the popularity baseline do not depend on the replay
    for name in ("batch_only", "popularity"):
        assert [a["ranks"][name] for a in fine["answers"]] == [a["ranks"][name] for a in coarse["answers"]]
    # slice 0: one round per question (all at distinct times); 3600 s: each b_j still waits for its a_j
    assert fine["rounds"] == len(targets)
    assert coarse["rounds"] == TEST_USERS + 1
