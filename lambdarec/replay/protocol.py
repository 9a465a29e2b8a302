"""The replay protocol as pure functions: which held-out events are asked about, in which rounds, at
what pace, and when the speed layer has caught up.

Who calls it: `lambdarec.replay.runner` (and the unit tests).

The protocol (README "Replay evaluation" says the same):
1. Events are in one total order: event time, then input order. The events from T on are "held out".
2. A **target** is a held-out event of a positive type (implicit weight > 0, or an explicit rating) on
   an item its user never touched before (neither before T nor earlier in the replay): every model
   excludes what the user already consumed, so a repeat could never be a hit. Optionally a seeded
   uniform sample of the targets is asked about (`max_targets`), so the cost is bounded; the metrics
   are then unbiased estimates over all targets, with the paired standard error reported.
3. The replay runs in **rounds**: publish a slice of events on the bus, wait until the streaming job
   has applied all of them, then ask about the targets of the next slice. Slices are cut greedily:
   a new slice starts at a target when its user already has an event in the current slice, or when
   the target is more than `max_slice_ms` of event time after the slice's first event. So when a
   target is asked about, (a) every earlier event of its own user has been published and applied,
   and (b) at most `max_slice_ms` of other users' events before it are not yet applied. Nothing at or
   after the target is ever visible. (b) is the only way the slice size can change a result; the
   benchmark measures two slice sizes to show the difference is within noise.
4. Before asking, the runner waits for the condition `caught_up`: the streaming job's status hash
   names, as `last_entry_id`, the last bus entry it applied, and it must be at least the id of the
   last entry published. It polls that condition with a deadline; it never sleeps a fixed time.
5. Bus entry ids are given by the replay (`stream_ids`): `<event ms>-<seq>`, so the speed layer's
   "bus time" is the event's own time (a virtual clock). Its trending windows and session gaps then
   follow event time, as they would have live; replay speed changes only wall-clock pacing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from feature_store.event_bus import EntryId, parse_entry_id
from feature_store.events import EventTypes


class ReplayProtocolError(ValueError):
    """A protocol parameter is not usable (says what was expected)."""


# -- targets -----------------------------------------------------------------------------------
def positive_types(event_types: EventTypes | None = None) -> frozenset[str]:
    """Event types a target may have: a positive implicit weight, or explicit (a rating)."""
    return frozenset(t.name for t in (event_types or EventTypes()) if t.explicit or t.weight > 0)


def first_time_targets(
    users: Sequence[str],
    items: Sequence[str],
    types: Sequence[str],
    start: int,
    history: Mapping[str, Iterable[str]],
    target_types: frozenset[str],
) -> list[int]:
    """Indices >= `start` of events of a target type on an item new to their user. `history` is each
    user's items before T; events before `start` (the warm-up) are in it already."""
    consumed: dict[str, set[str]] = {}
    out: list[int] = []
    for index in range(start, len(users)):
        user, item = users[index], items[index]
        seen = consumed.get(user)
        if seen is None:
            seen = consumed[user] = set(history.get(user, ()))
        if types[index] in target_types and item not in seen:
            out.append(index)
        seen.add(item)
    return out


def session_start_targets(
    users: Sequence[str],
    times_ms: Sequence[int],
    targets: Sequence[int],
    gap_ms: int,
    last_before: Mapping[str, int],
) -> frozenset[int]:
    """The targets that open a session: their user's previous event (in `times_ms`, or `last_before`:
    each user's last event time before the replayed events) is more than `gap_ms` earlier, or absent.
    The other targets are asked in the middle of a session."""
    last = dict(last_before)
    wanted, out = set(targets), set()
    for index, (user, ts) in enumerate(zip(users, times_ms)):
        previous = last.get(user)
        if index in wanted and (previous is None or ts - previous > gap_ms):
            out.add(index)
        last[user] = ts if previous is None else max(previous, ts)
    return frozenset(out)


def sample_targets(indices: Sequence[int], max_targets: int | None, seed: int) -> list[int]:
    """All targets, or a seeded uniform sample of `max_targets` of them, in replay order."""
    if max_targets is None or max_targets >= len(indices):
        return list(indices)
    if max_targets < 1:
        raise ReplayProtocolError(f"max_targets {max_targets} must be at least 1")
    return sorted(random.Random(seed).sample(list(indices), max_targets))


# -- rounds ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Round:
    """Publish `events[publish_from:publish_to]`, wait for the speed layer, then ask about `asks`
    (indices of targets, all >= publish_to)."""

    publish_from: int
    publish_to: int
    asks: tuple[int, ...]


def plan_rounds(
    users: Sequence[str], times_ms: Sequence[int], targets: Sequence[int], max_slice_ms: int
) -> list[Round]:
    """Cut the event sequence into slices (see the module docstring, step 3); one round per slice
    that holds targets. Events after the last target are never published (nothing asks about them)."""
    if max_slice_ms < 0:
        raise ReplayProtocolError(f"slice size {max_slice_ms} ms must be >= 0")
    wanted = set(targets)
    rounds: list[Round] = []
    published = slice_start = 0
    in_slice: set[str] = set()
    asks: list[int] = []
    last_target = max(wanted, default=-1)
    for index in range(last_target + 1):
        user = users[index]
        if index in wanted:
            if user in in_slice or times_ms[index] - times_ms[slice_start] > max_slice_ms:
                if asks:
                    rounds.append(Round(published, slice_start, tuple(asks)))
                    published = slice_start
                slice_start, asks = index, []
                in_slice = set()
            asks.append(index)
        in_slice.add(user)
    if asks:
        rounds.append(Round(published, slice_start, tuple(asks)))
    return rounds


# -- pacing ------------------------------------------------------------------------------------
_SPEED = re.compile(r"^realtime-x(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class ReplaySpeed:
    """`max`: publish as fast as the pipeline allows; `realtime-xN`: event time runs N times faster
    than wall-clock time (a slice is published when the wall clock reaches its scaled time)."""

    factor: float | None = None

    @classmethod
    def parse(cls, text: str) -> ReplaySpeed:
        text = text.strip().lower()
        if text == "max":
            return cls(None)
        match = _SPEED.match(text)
        if not match or float(match.group(1)) <= 0:
            raise ReplayProtocolError(
                f"--speed {text!r}: use `max` or `realtime-xN` with N > 0 (e.g. realtime-x3600)"
            )
        return cls(float(match.group(1)))

    def __str__(self) -> str:
        return "max" if self.factor is None else f"realtime-x{self.factor:g}"

    def wait_s(self, origin_event_ms: int, origin_wall_s: float, event_ms: int, now_wall_s: float) -> float:
        """Seconds to wait before publishing an event of time `event_ms` (0 when due or at `max`)."""
        if self.factor is None:
            return 0.0
        due = origin_wall_s + (event_ms - origin_event_ms) / 1000.0 / self.factor
        return max(0.0, due - now_wall_s)


# -- the bus clock and catch-up ----------------------------------------------------------------
def stream_ids(times_ms: Sequence[int], after: str | None = None) -> list[str]:
    """Entry ids `<ms>-<seq>` for events in time order: the event time as the id's time, strictly
    increasing (and after `after`, the last id already on the stream)."""
    previous = parse_entry_id(after) if after else None
    out: list[str] = []
    for ms in times_ms:
        ms = max(int(ms), 0)
        if previous is None:
            current = EntryId(ms, 1 if ms == 0 else 0)
        elif ms > previous.ms:
            current = EntryId(ms, 0)
        else:  # same millisecond (or a clamped earlier one): next sequence number
            current = EntryId(previous.ms, previous.seq + 1)
        out.append(str(current))
        previous = current
    return out


def caught_up(status: Mapping[str, str], last_published: str) -> bool:
    """The streaming job has applied every entry up to `last_published`: its status hash's
    `last_entry_id` (written after each micro-batch's Redis writes) is at least that id."""
    applied = status.get("last_entry_id")
    if not applied:
        return False
    return parse_entry_id(applied) >= parse_entry_id(last_published)
