"""The CLI end to end on real Delta tables: `lambdarec generate` -> `ingest` -> `batch features`,
with LAMBDAREC_DATA_DIR in a temp folder. Ground truth comes from the generator's manifest and from the
generated files themselves, read back with the event contract."""

import json
from collections import Counter
from datetime import date, timedelta

from typer.testing import CliRunner

from feature_store.events import parse_event_time
from feature_store.tables import BRONZE_EVENTS, ITEM_FEATURES, ITEMS, QUARANTINE, USER_FEATURES
from lambdarec.cli import build_app
from lambdarec.datagen import Manifest


def test_generate_ingest_features_on_real_delta_tables(spark, tmp_path, monkeypatch):
    # The shared session already runs; the commands' getOrCreate reuses it and the tables go where
    # LAMBDAREC_DATA_DIR says.
    data_dir = tmp_path / "state"
    monkeypatch.setenv("LAMBDAREC_DATA_DIR", str(data_dir))
    runner, app, out = CliRunner(), build_app(), tmp_path / "generated"

    generated = runner.invoke(
        app,
        [
            "generate",
            "--out",
            str(out),
            "--events",
            "1200",
            "--users",
            "40",
            "--items",
            "50",
            "--days",
            "3",
            "--start",
            "2026-10-01",
            "--bad-fraction",
            "0.05",
            "--shards",
            "2",
            "--seed",
            "21",
        ],
    )
    assert generated.exit_code == 0, generated.output
    manifest = Manifest.read(out)
    assert f"good events: {manifest.good_rows:,}" in generated.output

    first = runner.invoke(app, ["ingest", "--source", str(out), "--format", "jsonl"])
    assert first.exit_code == 0, first.output
    assert f"rows read:        {manifest.rows_total:,}" in first.output
    assert f"new in bronze:    {manifest.good_rows:,}" in first.output
    for reason, count in manifest.bad_rows.items():
        if count:
            assert f"{reason}: {count:,}" in first.output

    features = runner.invoke(app, ["batch", "features", "--start", "2026-10-02", "--end", "2026-10-05"])
    assert features.exit_code == 0, features.output

    def table(t):
        return spark.read.format("delta").load(str(data_dir / "delta" / t.name))

    assert table(BRONZE_EVENTS).count() == manifest.good_rows
    assert dict(Counter(r["reason"] for r in table(QUARANTINE).collect())) == {
        k: v for k, v in manifest.bad_rows.items() if v
    }
    assert table(ITEMS).count() == manifest.items

    # Oracle from the files: who and what had an event before each as_of.
    good_events = {}
    for path in sorted((out / "events").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                ts = parse_event_time(row["ts"])
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(row, dict) and str(row.get("event_id", "")).startswith("ev21-"):
                # the first copy in (file, line) order is the fact; a retried copy is a re-send
                good_events.setdefault(row["event_id"], (row["user_id"], row["item_id"], ts))
    expected_users, expected_items = set(), set()
    for day in range(3):
        as_of = date(2026, 10, 2) + timedelta(days=day)
        for user, item, ts in good_events.values():
            if ts.date() < as_of:
                expected_users.add((as_of, user))
                expected_items.add((as_of, item))
    assert len(good_events) == manifest.good_rows
    assert {(r["as_of"], r["user_id"]) for r in table(USER_FEATURES).collect()} == expected_users
    assert {(r["as_of"], r["item_id"]) for r in table(ITEM_FEATURES).collect()} == expected_items
    assert f"user feature rows: {len(expected_users):,}" in features.output
    assert f"item feature rows: {len(expected_items):,}" in features.output


def test_cli_rejects_bad_windows_and_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMBDAREC_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    runner, app = CliRunner(), build_app()
    backwards = runner.invoke(app, ["batch", "features", "--start", "2026-10-05", "--end", "2026-10-02"])
    assert backwards.exit_code != 0 and "must be after --start" in backwards.output
    not_a_date = runner.invoke(app, ["batch", "interactions", "--start", "yesterday", "--end", "2026-10-02"])
    assert not_a_date.exit_code != 0 and "is not a date" in not_a_date.output
    missing = runner.invoke(app, ["ingest", "--source", "nope"])
    assert missing.exit_code != 0 and "does not exist" in missing.output
