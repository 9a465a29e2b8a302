"""Compact value codecs of the online store (never pickle).

- Feature vectors: a 1-byte codec version, then little-endian float32s in the declared feature order;
  missing values are NaN. Decoding is one `numpy.frombuffer`, so serving pays almost nothing per item.
- Feature rows (one row per item of a list, e.g. the pool inputs of a user's recs): the same codec over
  the rows one after another; the reader knows the row width.
- Scored item lists (recommendations, similar items, popular): msgpack `[[item_id, score, source], ...]`.
- Id lists: msgpack `[item_id, ...]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgpack
import numpy as np

FEATURES_CODEC_VERSION = 1


class ScoredItem(NamedTuple):
    item_id: str
    score: float
    source: str


class CodecError(ValueError):
    """A stored value is not in the expected encoding (wrong codec version or corrupt)."""


def encode_features(values: Sequence[float | None]) -> bytes:
    array = np.array([np.nan if v is None else v for v in values], dtype="<f4")
    return bytes([FEATURES_CODEC_VERSION]) + array.tobytes()


def decode_features(blob: bytes, expected_length: int | None = None) -> np.ndarray:
    if not blob or blob[0] != FEATURES_CODEC_VERSION:
        raise CodecError(f"feature vector codec {blob[:1]!r} is not version {FEATURES_CODEC_VERSION}")
    if (len(blob) - 1) % 4:
        raise CodecError(f"feature vector of {len(blob) - 1} bytes is not a float32 array")
    array = np.frombuffer(blob, dtype="<f4", offset=1)
    if expected_length is not None and array.shape[0] != expected_length:
        raise CodecError(f"feature vector has {array.shape[0]} values, expected {expected_length}")
    return array


def encode_feature_rows(rows: Iterable[Sequence[float | None]]) -> bytes:
    return encode_features([v for row in rows for v in row])


def decode_feature_rows(blob: bytes, width: int) -> np.ndarray:
    """(rows, width) float32 of `encode_feature_rows`."""
    array = decode_features(blob)
    if array.shape[0] % width:
        raise CodecError(f"{array.shape[0]} values are not rows of {width}")
    return array.reshape(-1, width)


def encode_recs(items: Iterable[tuple[str, float, str]]) -> bytes:
    return msgpack.packb([[item, float(score), source] for item, score, source in items], use_bin_type=True)


def decode_recs(blob: bytes) -> list[ScoredItem]:
    try:
        return [ScoredItem(item, score, source) for item, score, source in msgpack.unpackb(blob, raw=False)]
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise CodecError(f"not an encoded list of scored items: {exc}") from exc


def decode_recs_plain(blob: bytes) -> tuple[tuple[str, float, str], ...]:
    """`decode_recs` as plain `(item_id, score, source)` tuples (index them; the values are the same).
    Tuples of strings and floats drop out of the garbage collector's tracking, so a process that keeps
    hundreds of thousands in memory (serving's batch-version cache) does not rescan them on every full
    collection, and no per-item object is built."""
    try:
        recs = msgpack.unpackb(blob, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise CodecError(f"not an encoded list of scored items: {exc}") from exc
    # set(map(...)): checked at C speed, these lists are decoded on every request of a new user
    if not isinstance(recs, tuple) or not set(map(type, recs)) <= {tuple} or not set(map(len, recs)) <= {3}:
        raise CodecError("not an encoded list of scored items: expected [[item_id, score, source], ...]")
    return recs


def encode_ids(ids: Iterable[str]) -> bytes:
    return msgpack.packb(list(ids), use_bin_type=True)


def decode_ids(blob: bytes) -> list[str]:
    try:
        ids = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise CodecError(f"not an encoded id list: {exc}") from exc
    if not isinstance(ids, list):
        raise CodecError("not an encoded id list")
    return ids
