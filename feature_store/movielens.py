"""MovieLens ratings as events: the one rule both readers follow.

A `ratings.csv` line `userId,movieId,rating,timestamp` (seconds) becomes a `rating` event with the
deterministic id `ml-<user>-<movie>-<seconds>`, `ts` = seconds x 1000 and the rating as `value`.
`rating_event` is the rule in Python (the replay, lambdarec.replay.dataset); spark_jobs.sources'
`movielens_ratings_to_raw` is the same rule as Spark columns (no Python UDF on the ingest path) built
from the patterns below, and tests/spark/test_sources_movielens.py holds the two equal line for line.

Fields are trimmed of spaces; an empty field is missing. A timestamp that is not 1-12 ASCII digits and
a rating that is not a plain decimal stay text, so the event contract rejects the line for that field;
a line without four fields is not an event at all (malformed). The header line and blank lines are
skipped.
"""

from __future__ import annotations

import re
from typing import Any

RATINGS_HEADER = "userId,movieId,rating,timestamp"
EVENT_ID_PREFIX = "ml"
SECONDS_PATTERN = r"^[0-9]{1,12}$"
RATING_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"  # a JSON number as written

_SECONDS = re.compile(SECONDS_PATTERN)
_RATING = re.compile(RATING_PATTERN)


def is_skipped(line: str) -> bool:
    """The header and blank lines are not rows."""
    text = line.strip(" ")
    return text == RATINGS_HEADER or text == ""


def rating_event(line: str) -> dict[str, Any] | None:
    """The event dict of one ratings.csv row (None: not four fields). Validate it with the event
    contract: a missing or mistyped field is the contract's to reject."""
    fields = line.split(",")
    if len(fields) != 4:
        return None
    user, movie, rating, seconds = (f.strip(" ") for f in fields)
    return {
        "event_id": f"{EVENT_ID_PREFIX}-{user}-{movie}-{seconds}" if user and movie and seconds else None,
        "user_id": user or None,
        "item_id": movie or None,
        "event_type": "rating",
        "ts": int(seconds) * 1000 if _SECONDS.match(seconds) else (seconds or None),
        "value": float(rating) if _RATING.match(rating) else (rating or None),
    }
