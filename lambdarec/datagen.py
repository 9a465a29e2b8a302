"""Synthetic event data: a realistic, deterministic stream of shop events plus an item catalog.

`lambdarec generate` (lambdarec.commands.data), `make demo`, the tests and the benchmarks call
`generate(config, out_dir)`. The world it simulates:

- items in categories, each category split into clusters of related items (a series, a brand line);
  popularity is power-law inside a cluster, new items arrive every day and get a short freshness boost;
- users with latent tastes over categories (a sparse Dirichlet), a power-law activity level, and tastes
  that drift over days towards a slowly changing focus category;
- sessions at diurnal times, with bursts of fast events; inside a session the user follows an *intent*
  (one cluster of one category), revisits what they saw minutes ago, and only sometimes wanders off,
  so recent items and co-visitation carry information beyond long-term taste;
- a funnel view -> click -> add_to_cart -> purchase whose rates depend on the user's taste for the item's
  category and the item's appeal, plus explicit `rating` events after purchases;
- timestamps as ISO-8601 (UTC `Z` or a local offset) or epoch milliseconds, mixed;
- a configurable fraction of bad rows, one `QuarantineReason` each (malformed lines, missing or invalid
  ids, unknown event types, unparseable or far-future timestamps, bad values, duplicate event ids).

Events are written as they are generated (one session at a time, round-robin over shard files), so
memory stays O(users + items) whatever the number of events. `manifest.json` records how many good rows
and how many bad rows of each reason were written: the ground truth the ingest tests check against.

Why one module: the world, its sessions and the bad rows draw from one seeded random stream, so one
seed reproduces the output byte for byte; split, the draw order would be a contract between files.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from pathlib import Path

import orjson

from feature_store.events import CONTEXT_MAX_BYTES, CONTEXT_MAX_KEYS, QuarantineReason

MANIFEST_NAME = "manifest.json"
CATALOG_NAME = "items.jsonl"
EVENTS_DIR = "events"

CATEGORY_NAMES = (
    "electronics",
    "books",
    "fashion",
    "home",
    "garden",
    "sports",
    "toys",
    "beauty",
    "grocery",
    "music",
    "movies",
    "games",
    "automotive",
    "health",
    "pets",
    "office",
    "outdoors",
    "jewelry",
    "baby",
    "crafts",
)
ADJECTIVES = (
    "classic",
    "smart",
    "compact",
    "deluxe",
    "eco",
    "vintage",
    "pro",
    "mini",
    "ultra",
    "urban",
    "cozy",
    "bold",
)
DEVICES = ("ios", "android", "web")
PAGES = ("home", "search", "category", "item", "recommendations")

# Bad-row kinds and their relative frequency (each is exactly one quarantine reason).
BAD_ROW_MIX: dict[QuarantineReason, float] = {
    QuarantineReason.MALFORMED: 1.0,
    QuarantineReason.MISSING_EVENT_ID: 1.0,
    QuarantineReason.MISSING_USER_ID: 1.0,
    QuarantineReason.MISSING_ITEM_ID: 1.0,
    QuarantineReason.INVALID_ID: 0.7,
    QuarantineReason.UNKNOWN_EVENT_TYPE: 1.0,
    QuarantineReason.BAD_TIMESTAMP: 1.0,
    QuarantineReason.FUTURE_TIMESTAMP: 0.7,
    QuarantineReason.BAD_VALUE: 0.6,
    QuarantineReason.CONTEXT_TOO_LARGE: 0.2,
    QuarantineReason.DUPLICATE_EVENT_ID: 1.5,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000


class GeneratorError(ValueError):
    """The generator's parameters cannot produce a data set (says which and why)."""


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Same config (seed included) -> byte-identical files."""

    events: int = 100_000  # good events written (exact)
    users: int = 2_000
    items: int = 1_000  # catalog size on the first day
    new_items_per_day: float = 5.0  # items arriving each day (Poisson mean)
    categories: int = 12
    clusters_per_category: int = 6
    days: int = 30
    start: date = date(2026, 10, 1)  # first day (00:00 UTC)
    bad_fraction: float = 0.0  # share of all rows that are bad
    shards: int = 1  # event files
    seed: int = 0
    rating_rate: float = 0.35  # share of purchases followed by a rating
    view_rating_rate: float = 0.01  # share of views rated directly (media-style explicit feedback)
    intent_stickiness: float = 0.75  # share of session views taken from the session's intent cluster
    revisit_rate: float = 0.15  # share of views that go back to an item seen earlier in the session
    taste_drift: float = 0.08  # daily pull of taste towards the user's current focus category
    focus_change_rate: float = 0.05  # daily chance the focus category changes
    epoch_millis_share: float = 0.45  # ts format mix: epoch millis, else ISO-8601 (mostly `Z`, some offsets)

    def validate(self) -> None:
        checks = {
            "events must be >= 1": self.events >= 1,
            "users must be >= 1": self.users >= 1,
            "items must be >= 1": self.items >= 1,
            "days must be >= 1": self.days >= 1,
            "shards must be >= 1": self.shards >= 1,
            "categories must be in 1..500": 1 <= self.categories <= 500,
            "clusters_per_category must be >= 1": self.clusters_per_category >= 1,
            "bad_fraction must be in [0, 0.5]": 0.0 <= self.bad_fraction <= 0.5,
            "new_items_per_day must be >= 0": self.new_items_per_day >= 0,
        }
        wrong = [text for text, ok in checks.items() if not ok]
        if wrong:
            raise GeneratorError("invalid generator config: " + "; ".join(wrong))


@dataclass
class Manifest:
    """What a generation wrote: the ground truth of the ingest tests and the demo's report."""

    config: dict
    events_files: list[str]
    catalog_file: str
    rows_total: int = 0
    good_rows: int = 0
    bad_rows: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in QuarantineReason})
    events_by_type: dict[str, int] = field(default_factory=dict)
    users: int = 0
    items: int = 0
    sessions: int = 0
    first_ts: str = ""
    last_ts: str = ""

    @property
    def bad_total(self) -> int:
        return sum(self.bad_rows.values())

    def to_json(self) -> dict:
        data = asdict(self)
        data["bad_total"] = self.bad_total
        return data

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        data = json.loads((Path(directory) / MANIFEST_NAME).read_text())
        data.pop("bad_total", None)
        return cls(**data)


# -- the simulated world ----------------------------------------------------------------------------


@dataclass
class _Catalog:
    category: list[int]  # per item
    cluster: list[int]  # per item, global cluster index (category * clusters_per_category + k)
    appeal: list[float]  # per item, latent quality in [-1, 1]
    base_weight: list[float]  # power-law popularity
    created_day: list[int]  # day index it becomes available (negative = before the start)
    price: list[float]


def _category_names(n: int) -> list[str]:
    return [CATEGORY_NAMES[i] if i < len(CATEGORY_NAMES) else f"category_{i:03d}" for i in range(n)]


def _build_catalog(config: GeneratorConfig, rng) -> _Catalog:
    """Initial items plus the ones that arrive each day (decided up front so the catalog file is complete)."""
    import numpy as np

    arrivals = (
        rng.poisson(config.new_items_per_day, size=config.days)
        if config.new_items_per_day > 0
        else np.zeros(config.days, int)
    )
    created = np.concatenate(
        [-rng.integers(1, 366, size=config.items), np.repeat(np.arange(config.days), arrivals)]
    )
    n = created.size
    # Category sizes are skewed too: a few big categories, a long tail.
    cat_share = rng.dirichlet(np.full(config.categories, 2.0))
    category = rng.choice(config.categories, size=n, p=cat_share)
    cluster = category * config.clusters_per_category + rng.integers(0, config.clusters_per_category, size=n)
    base_weight = rng.pareto(1.2, size=n) + 0.05  # power-law popularity
    appeal = np.tanh(rng.normal(0.0, 0.6, size=n))
    price = np.round(np.exp(rng.normal(3.0, 0.9, size=n)), 2)
    return _Catalog(
        category=category.tolist(),
        cluster=cluster.tolist(),
        appeal=appeal.tolist(),
        base_weight=base_weight.tolist(),
        created_day=created.tolist(),
        price=price.tolist(),
    )


def item_id_of(index: int) -> str:
    return f"item-{index:07d}"


def user_id_of(index: int) -> str:
    return f"user-{index:07d}"


def _catalog_rows(config: GeneratorConfig, catalog: _Catalog, rng: random.Random):
    names = _category_names(config.categories)
    start = datetime.combine(config.start, datetime.min.time(), tzinfo=UTC)
    for i, cat in enumerate(catalog.category):
        created = start + timedelta(days=catalog.created_day[i])
        if catalog.created_day[i] < 0:  # older items: some time during that day
            created += timedelta(seconds=rng.randrange(86_400))
        related = names[(cat + 1 + (catalog.cluster[i] % 3)) % len(names)]
        categories = [names[cat]] if related == names[cat] else [names[cat], related]
        yield {
            "item_id": item_id_of(i),
            "category": names[cat],
            "categories": categories,
            "title": f"{rng.choice(ADJECTIVES).title()} {names[cat]} item {i}",
            "attributes": {
                "price": f"{catalog.price[i]:.2f}",
                "cluster": f"c{catalog.cluster[i]}",
                "brand": f"brand-{catalog.cluster[i] % 37}",
            },
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class _DayPools:
    """Popularity-weighted samplers over the items available on one day (per cluster, category, all)."""

    def __init__(self, catalog: _Catalog, day: int, n_clusters: int, n_categories: int) -> None:
        by_cluster: list[list[int]] = [[] for _ in range(n_clusters)]
        by_category: list[list[int]] = [[] for _ in range(n_categories)]
        weights: dict[int, float] = {}
        for i, created in enumerate(catalog.created_day):
            if created > day:
                continue
            age = day - created
            # New items get a launch boost that fades over a few days.
            weights[i] = catalog.base_weight[i] * (1.0 + 4.0 * math.exp(-age / 3.0) if age < 30 else 1.0)
            by_cluster[catalog.cluster[i]].append(i)
            by_category[catalog.category[i]].append(i)
        self.cluster = [self._sampler(ids, weights) for ids in by_cluster]
        self.category = [self._sampler(ids, weights) for ids in by_category]
        self.everything = self._sampler(sorted(weights), weights)
        self.cluster_weight = [s[1][-1] if s[1] else 0.0 for s in self.cluster]

    @staticmethod
    def _sampler(ids: list[int], weights: dict[int, float]) -> tuple[list[int], list[float]]:
        return ids, list(accumulate(weights[i] for i in ids))

    @staticmethod
    def draw(sampler: tuple[list[int], list[float]], rng: random.Random) -> int | None:
        ids, cum = sampler
        if not ids:
            return None
        return ids[min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(ids) - 1)]


# -- formatting -------------------------------------------------------------------------------------


def format_ts(ms: int, rng: random.Random, millis_share: float) -> int | str:
    """Epoch millis, or ISO-8601 with `Z` (most) or a local offset (some), all the same instant."""
    r = rng.random()
    if r < millis_share:
        return ms
    moment = _EPOCH + timedelta(milliseconds=ms)
    if r < millis_share + (1 - millis_share) * 0.75:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    offset_h = rng.choice((-5, -3, 1, 2, 9))
    local = moment + timedelta(hours=offset_h)
    sign = "+" if offset_h >= 0 else "-"
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}{sign}{abs(offset_h):02d}:00"


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- the generator ----------------------------------------------------------------------------------


class _Writer:
    """Round-robin over shard files, one session's lines at a time; counts what it wrote."""

    def __init__(self, paths: list[Path]) -> None:
        self.files = [p.open("wb", buffering=1 << 20) for p in paths]
        self.next = 0

    def write(self, lines: list[bytes]) -> None:
        if lines:
            self.files[self.next].write(b"\n".join(lines) + b"\n")
            self.next = (self.next + 1) % len(self.files)

    def close(self) -> None:
        for f in self.files:
            f.close()


class _BadRows:
    """Makes one bad row of a chosen reason from a plausible good event (its only defect is that reason)."""

    def __init__(self, rng: random.Random, seed: int) -> None:
        self.rng = rng
        self.seed = seed
        self.count = 0
        kinds = list(BAD_ROW_MIX)
        self.kinds = kinds
        self.cum = list(accumulate(BAD_ROW_MIX[k] for k in kinds))
        self.recent_good: list[dict] = []  # ring of recent good events, for duplicates

    def remember(self, event: dict) -> None:
        if len(self.recent_good) < 64:
            self.recent_good.append(event)
        else:
            self.recent_good[self.rng.randrange(64)] = event

    def make(self, template: dict) -> tuple[QuarantineReason, bytes]:
        rng = self.rng
        kind = self.kinds[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]
        if kind is QuarantineReason.DUPLICATE_EVENT_ID and not self.recent_good:
            kind = QuarantineReason.UNKNOWN_EVENT_TYPE
        self.count += 1
        row = dict(template)
        row["event_id"] = f"bad{self.seed}-{self.count:08d}"
        row["event_type"] = "view"
        row.pop("value", None)
        if kind is QuarantineReason.MALFORMED:
            text = orjson.dumps(row)
            choice = rng.randrange(3)
            if choice == 0:
                return kind, text[: len(text) // 2]  # truncated line: an unclosed object
            if choice == 1:
                return kind, b"[" + text + b"]"  # valid JSON, but not an object
            return kind, b"user=" + row["user_id"].encode() + b" clicked something"
        if kind in (
            QuarantineReason.MISSING_EVENT_ID,
            QuarantineReason.MISSING_USER_ID,
            QuarantineReason.MISSING_ITEM_ID,
        ):
            key = {
                "missing_event_id": "event_id",
                "missing_user_id": "user_id",
                "missing_item_id": "item_id",
            }[kind.value]
            how = rng.randrange(3)
            if how == 0:
                del row[key]
            else:
                row[key] = None if how == 1 else ""
        elif kind is QuarantineReason.INVALID_ID:
            key = rng.choice(("user_id", "item_id", "event_id"))
            row[key] = rng.choice((f"{row[key]} with spaces", f"{row[key]}#!", "x" * 200))
        elif kind is QuarantineReason.UNKNOWN_EVENT_TYPE:
            row["event_type"] = rng.choice(("hover", "teleport", "VIEW", "wishlist_add", ""))
        elif kind is QuarantineReason.BAD_TIMESTAMP:
            row["ts"] = rng.choice(("yesterday", "2026-13-45T25:00:00Z", "", None, "10/01/2026 10:00", True))
        elif kind is QuarantineReason.FUTURE_TIMESTAMP:
            far = rng.randrange(2_099, 2_400)
            ms = int((datetime(far, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds() * 1000) + rng.randrange(
                _DAY_MS
            )
            row["ts"] = ms if rng.random() < 0.5 else _iso(ms)
        elif kind is QuarantineReason.BAD_VALUE:
            if rng.random() < 0.5:
                row["event_type"] = "rating"  # a rating without its value
            else:
                row["value"] = rng.choice(("a lot", "five", "n/a", [1, 2]))
        elif kind is QuarantineReason.CONTEXT_TOO_LARGE:
            if rng.random() < 0.5:  # a client that dumps its whole state into the context
                row["context"] = {
                    f"field_{n}": str(n) for n in range(CONTEXT_MAX_KEYS + 1 + rng.randrange(20))
                }
            else:
                row["context"] = {
                    "page": "item",
                    "payload": "x" * (CONTEXT_MAX_BYTES + rng.randrange(1, 2_000)),
                }
        elif kind is QuarantineReason.DUPLICATE_EVENT_ID:
            original = rng.choice(self.recent_good)
            row = dict(original)
            if rng.random() < 0.5:  # a retry re-stamped a little later (a re-send: the first copy wins)
                row["ts"] = original["_ms"] + rng.randrange(1_000, 10_000)
        row.pop("_ms", None)
        return kind, orjson.dumps(row)


def generate(
    config: GeneratorConfig,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Write `out_dir/events/part-*.jsonl`, `out_dir/items.jsonl` and `out_dir/manifest.json`.

    `progress(done, total)` is called now and then with good events written so far."""
    import numpy as np

    config.validate()
    out_dir = Path(out_dir)
    (out_dir / EVENTS_DIR).mkdir(parents=True, exist_ok=True)
    nrng = np.random.default_rng(config.seed)
    rng = random.Random(config.seed)

    catalog = _build_catalog(config, nrng)
    with (out_dir / CATALOG_NAME).open("wb") as f:
        for row in _catalog_rows(config, catalog, random.Random(config.seed + 1)):
            f.write(orjson.dumps(row) + b"\n")

    n_cat, n_clusters = config.categories, config.categories * config.clusters_per_category
    tastes = nrng.dirichlet(np.full(n_cat, 0.3), size=config.users)
    focus = tastes.argmax(axis=1)
    activity = nrng.lognormal(0.0, 1.0, size=config.users)
    activity /= activity.sum()
    cat_names = _category_names(n_cat)

    shard_paths = [out_dir / EVENTS_DIR / f"part-{i:05d}.jsonl" for i in range(config.shards)]
    manifest = Manifest(
        config={k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(config).items()},
        events_files=[str(p.relative_to(out_dir)) for p in shard_paths],
        catalog_file=CATALOG_NAME,
        users=config.users,
        items=len(catalog.category),
    )
    writer = _Writer(shard_paths)
    bad = _BadRows(random.Random(config.seed + 2), config.seed)
    bad_per_good = config.bad_fraction / (1.0 - config.bad_fraction) if config.bad_fraction else 0.0
    start_ms = int(
        (datetime.combine(config.start, datetime.min.time(), tzinfo=UTC) - _EPOCH).total_seconds() * 1000
    )
    good = 0
    event_counter = 0
    first_ms = last_ms = None
    events_per_session = 8.0  # running estimate, to spread the target evenly over the days
    by_type: dict[str, int] = {}

    try:
        for day in range(config.days):
            if good >= config.events:
                break
            # Taste drift: a slowly changing focus pulls each user's taste towards it.
            change = nrng.random(config.users) < config.focus_change_rate
            focus[change] = nrng.choice(n_cat, size=int(change.sum()))
            tastes *= 1.0 - config.taste_drift
            tastes[np.arange(config.users), focus] += config.taste_drift
            pools = _DayPools(catalog, day, n_clusters, n_cat)

            days_left = config.days - day
            weekday_factor = 1.25 if (config.start + timedelta(days=day)).weekday() >= 5 else 1.0
            n_sessions = max(1, int((config.events - good) / days_left / events_per_session * weekday_factor))
            users = nrng.choice(config.users, size=n_sessions, p=activity)
            # Diurnal session starts: a mixture peaking in the evening.
            hours = (
                np.where(
                    nrng.random(n_sessions) < 0.7,
                    nrng.normal(19.5, 2.5, n_sessions),
                    nrng.uniform(0, 24, n_sessions),
                )
                % 24
            )
            starts = np.sort((hours * 3_600_000).astype(np.int64))
            intents = (
                (np.cumsum(tastes[users], axis=1) < nrng.random(n_sessions)[:, None])
                .sum(axis=1)
                .clip(0, n_cat - 1)
            )
            day_ms = start_ms + day * _DAY_MS
            day_events = 0
            s = 0
            while s < n_sessions or (day == config.days - 1 and good < config.events):
                if s < n_sessions:
                    user, intent_cat, t0 = int(users[s]), int(intents[s]), day_ms + int(starts[s])
                else:  # last day and still short of the target: more evening sessions
                    user = int(nrng.choice(config.users, p=activity))
                    intent_cat = int(rng.choices(range(n_cat), weights=tastes[user])[0])
                    t0 = day_ms + rng.randrange(18 * 3_600_000, 23 * 3_600_000)
                s += 1
                lines, n_good, t_last = _session(
                    config,
                    rng,
                    pools,
                    catalog,
                    tastes[user],
                    user,
                    intent_cat,
                    t0,
                    cat_names,
                    limit=config.events - good,
                    counter=event_counter,
                    bad=bad,
                    bad_per_good=bad_per_good,
                    manifest=manifest,
                    by_type=by_type,
                )
                if n_good == 0:
                    continue
                event_counter += n_good
                good += n_good
                day_events += n_good
                manifest.sessions += 1
                first_ms = t0 if first_ms is None else min(first_ms, t0)
                last_ms = t_last if last_ms is None else max(last_ms, t_last)
                writer.write(lines)
                if progress and manifest.sessions % 500 == 0:
                    progress(good, config.events)
                if good >= config.events:
                    break
            if s:
                events_per_session = 0.5 * events_per_session + 0.5 * (day_events / max(1, s))
    finally:
        writer.close()

    manifest.good_rows = good
    manifest.rows_total = good + manifest.bad_total
    manifest.events_by_type = dict(sorted(by_type.items()))
    manifest.first_ts = _iso(first_ms) if first_ms is not None else ""
    manifest.last_ts = _iso(last_ms) if last_ms is not None else ""
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
    if progress:
        progress(good, config.events)
    return manifest


def _session(
    config,
    rng,
    pools,
    catalog,
    taste,
    user,
    intent_cat,
    t0,
    cat_names,
    *,
    limit,
    counter,
    bad,
    bad_per_good,
    manifest,
    by_type,
):
    """One session's lines (good and interleaved bad), the number of good events and its last time."""
    user_id = user_id_of(user)
    n_clusters_per_cat = config.clusters_per_category
    intent_cluster = _pick_cluster(pools, intent_cat, n_clusters_per_cat, rng)
    device = DEVICES[user % len(DEVICES)] if rng.random() < 0.9 else rng.choice(DEVICES)
    n_views = 1 + min(int(rng.expovariate(1 / 4.0)), 40)
    burst = rng.random() < 0.2  # a burst session: events seconds apart
    seen: list[int] = []
    lines: list[bytes] = []
    t = t0
    n_good = 0

    def emit(item: int, event_type: str, value: float | None, position: int) -> None:
        nonlocal n_good, t
        eid = f"ev{config.seed}-{counter + n_good:09d}"
        event = {
            "event_id": eid,
            "user_id": user_id,
            "item_id": item_id_of(item),
            "event_type": event_type,
            "ts": format_ts(t, rng, config.epoch_millis_share),
        }
        if value is not None:
            event["value"] = value
        event["context"] = {"device": device, "page": PAGES[position % len(PAGES)], "position": str(position)}
        lines.append(orjson.dumps(event))
        n_good += 1
        by_type[event_type] = by_type.get(event_type, 0) + 1
        event["_ms"] = t
        bad.remember(event)
        if bad_per_good and rng.random() < bad_per_good:
            reason, line = bad.make(event)
            manifest.bad_rows[reason.value] += 1
            lines.append(line)

    def gap(short: bool) -> int:
        if burst or short:
            return int(rng.uniform(300, 3_000))
        return int(rng.expovariate(1 / 35_000.0)) + 1_000

    for position in range(n_views):
        if n_good >= limit:
            break
        item = None
        r = rng.random()
        if seen and r < config.revisit_rate:
            item = seen[-1 - min(int(rng.expovariate(1.0)), len(seen) - 1)]  # recent items most likely
        elif r < config.revisit_rate + config.intent_stickiness * (1 - config.revisit_rate):
            item = pools.draw(pools.cluster[intent_cluster], rng) if intent_cluster is not None else None
        elif r < 0.93:
            item = pools.draw(pools.category[intent_cat], rng)
        if item is None:
            item = pools.draw(pools.everything, rng)
        if item is None:
            break
        if rng.random() < 0.08:  # the intent moves on to a related cluster, guided by taste
            intent_cat = _weighted_category(taste, rng)
            intent_cluster = _pick_cluster(pools, intent_cat, n_clusters_per_cat, rng)
        seen.append(item)
        emit(item, "view", None, position)
        if config.view_rating_rate and rng.random() < config.view_rating_rate and n_good < limit:
            t += gap(True)
            emit(item, "rating", _rating(taste[catalog.category[item]], catalog.appeal[item], rng), position)
        affinity = taste[catalog.category[item]]
        p_click = _sigmoid(-2.0 + 2.5 * affinity + 1.2 * catalog.appeal[item])
        if rng.random() < p_click and n_good < limit:
            t += gap(True)
            emit(item, "click", None, position)
            if rng.random() < _sigmoid(-2.5 + 2.0 * affinity + catalog.appeal[item]) and n_good < limit:
                t += gap(False)
                emit(item, "add_to_cart", catalog.price[item], position)
                if rng.random() < 0.45 + 0.2 * catalog.appeal[item] and n_good < limit:
                    t += gap(False)
                    emit(item, "purchase", catalog.price[item], position)
                    if rng.random() < config.rating_rate and n_good < limit:
                        t += gap(False)
                        emit(item, "rating", _rating(affinity, catalog.appeal[item], rng), position)
        t += gap(False)
    return lines, n_good, t


def _pick_cluster(pools: _DayPools, category: int, per_category: int, rng: random.Random) -> int | None:
    first = category * per_category
    weights = pools.cluster_weight[first : first + per_category]
    total = sum(weights)
    if total <= 0:
        return None
    return first + min(bisect.bisect_right(list(accumulate(weights)), rng.random() * total), per_category - 1)


def _weighted_category(taste, rng: random.Random) -> int:
    u = rng.random()
    acc = 0.0
    for i, w in enumerate(taste):
        acc += w
        if u < acc:
            return i
    return len(taste) - 1


def _rating(affinity: float, appeal: float, rng: random.Random) -> float:
    raw = 3.0 + 1.5 * appeal + 1.5 * (affinity - 0.2) + rng.gauss(0.0, 0.7)
    return min(5.0, max(0.5, round(raw * 2) / 2))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
