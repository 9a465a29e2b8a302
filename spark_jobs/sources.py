"""Readers that turn input files into the one raw shape ingest takes.

Every source becomes `events`: a DataFrame of (`raw` STRING: one JSON object per row, exactly as it
arrived or, for CSV sources, normalised to JSON; `source` STRING: where it came from) plus, when the
source has one, `items`: the catalog in the shape of feature_store.tables.ITEMS. spark_jobs.ingest
validates `events` with the event contract's rules, so a bad line of any source ends in quarantine.

- `jsonl`: JSON lines event files (a file, or a folder: `events/` below it or its `*.jsonl` files) and
  an optional catalog (`items.jsonl` next to them, or `--catalog`), as `lambdarec generate` writes.
- `movielens`: the ml-latest-small layout: `ratings.csv` (userId,movieId,rating,timestamp in seconds)
  becomes `rating` events by feature_store.movielens' rule (id `ml-<user>-<movie>-<ts>`, rating as `value`);
  `movies.csv` (movieId,title,genres) becomes the catalog (first genre = category, all genres =
  categories, title = text).

Called by spark_jobs.ingest.ingest (and so `lambdarec ingest`), the demo and the benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from feature_store.movielens import EVENT_ID_PREFIX, RATING_PATTERN, RATINGS_HEADER, SECONDS_PATTERN
from feature_store.tables import ITEMS
from spark_jobs.event_time import with_event_time_micros

FORMATS = ("jsonl", "movielens")
CATALOG_FILE = "items.jsonl"
NO_GENRE = "(no genres listed)"
UNKNOWN_CATEGORY = "unknown"


class SourceError(ValueError):
    """The source path or format is not usable (says what was expected)."""


@dataclass(frozen=True)
class RawInput:
    """What a source holds: raw event rows, an optional catalog, and the files they came from."""

    events: DataFrame  # raw STRING, source STRING
    items: DataFrame | None  # feature_store.tables.ITEMS columns
    event_files: tuple[str, ...]
    catalog_file: str | None


def read_source(
    spark: SparkSession, path: Path | str, fmt: str, catalog: Path | str | None = None
) -> RawInput:
    """Read a source folder or file in one of `FORMATS`."""
    path = Path(path)
    if fmt == "jsonl":
        files, found_catalog = jsonl_files(path)
        catalog_path = Path(catalog) if catalog else found_catalog
        items = read_catalog_jsonl(spark, catalog_path) if catalog_path else None
        return RawInput(
            read_jsonl_events(spark, files),
            items,
            tuple(map(str, files)),
            str(catalog_path) if catalog_path else None,
        )
    if fmt == "movielens":
        ratings, movies = path / "ratings.csv", path / "movies.csv"
        if not ratings.is_file():
            raise SourceError(f"{path} has no ratings.csv: point --source at an ml-latest-small folder")
        lines = spark.read.text(str(ratings)).select(
            F.col("value").alias("line"),
            F.col("_metadata.file_path").alias("source"),
            input_position().alias("arrival"),
        )
        items = movielens_movies_to_items(read_movielens_movies(spark, movies)) if movies.is_file() else None
        return RawInput(
            movielens_ratings_to_raw(lines), items, (str(ratings),), str(movies) if movies.is_file() else None
        )
    raise SourceError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def jsonl_files(path: Path) -> tuple[list[Path], Path | None]:
    """Event files and the catalog of a JSON lines source (a file, or a folder as `generate` writes it)."""
    if path.is_file():
        sibling = path.parent / CATALOG_FILE
        return [path], (sibling if sibling.is_file() and sibling != path else None)
    if not path.is_dir():
        raise SourceError(f"{path} does not exist: give a .jsonl file or a folder of them")
    events_dir = path / "events"
    root = events_dir if events_dir.is_dir() else path
    # path order is arrival order (which copy of a re-sent event wins)
    files = sorted(
        [p for p in root.rglob("*.jsonl") if p.name != CATALOG_FILE] + list(root.rglob("*.jsonl.gz"))
    )
    if not files:
        raise SourceError(f"no *.jsonl event files in {root}")
    catalog = path / CATALOG_FILE
    return files, (catalog if catalog.is_file() else None)


def input_position() -> Column:
    """Where a line of a text read sits: (file, start of its split, position in the split), which sorts
    as the lines were written. The `arrival` of a batch input (feature_store.events: the first copy of
    an event id to arrive wins)."""
    return F.struct(
        F.col("_metadata.file_path").alias("file"),
        F.col("_metadata.file_block_start").alias("split"),
        F.monotonically_increasing_id().alias("line"),
    )


def read_jsonl_events(spark: SparkSession, files: list[Path] | list[str]) -> DataFrame:
    """One row per non-blank line: (raw, source = the file's URI, arrival). Blank lines are not rows."""
    df = spark.read.text([str(f) for f in files])
    return df.select(
        F.col("value").alias("raw"),
        F.col("_metadata.file_path").alias("source"),
        input_position().alias("arrival"),
    ).where(F.length(F.trim(F.col("raw"))) > 0)


def read_catalog_jsonl(spark: SparkSession, path: Path | str) -> DataFrame:
    """The catalog file (item_id, category, categories, title, attributes, created_at) as ITEMS rows."""
    schema = "item_id STRING, category STRING, categories ARRAY<STRING>, title STRING, attributes MAP<STRING, STRING>, created_at STRING"
    raw = spark.read.schema(schema).json(str(path))
    parsed = with_event_time_micros(
        raw, F.col("created_at"), F.lit(False), F.lit(None).cast("double"), "_created_us"
    )
    return catalog_rows(
        parsed.withColumn("created_at", F.timestamp_micros("_created_us")).drop("_created_us")
    )


def catalog_rows(df: DataFrame) -> DataFrame:
    """Normalise catalog rows: a category always ("unknown" if missing), categories containing it."""
    category = F.coalesce(
        F.nullif(F.trim(F.col("category")), F.lit("")), F.get(F.col("categories"), 0), F.lit(UNKNOWN_CATEGORY)
    )
    categories = F.coalesce(F.col("categories"), F.array(category))
    return df.where(F.col("item_id").isNotNull() & (F.length(F.col("item_id")) > 0)).select(
        "item_id",
        category.alias("category"),
        categories.alias("categories"),
        "title",
        "attributes",
        F.col("created_at").cast("timestamp").alias("created_at"),
    )


# -- MovieLens ------------------------------------------------------------------------------------


def _json_string(col: Column) -> Column:
    """A JSON string literal for a column (null -> JSON null), escaped by Spark's own JSON writer."""
    return F.coalesce(F.regexp_extract(F.to_json(F.array(col)), r"^\[(.*)\]$", 1), F.lit("null"))


def movielens_ratings_to_raw(lines: DataFrame) -> DataFrame:
    """ratings.csv lines (`line`, `source`, any other columns such as `arrival`) -> raw JSON events
    (`raw`, `source`, the other columns), header dropped.

    A well-formed row becomes {"event_id": "ml-<user>-<movie>-<ts>", "user_id", "item_id", "event_type":
    "rating", "ts": <seconds * 1000>, "value": <rating>}; a numeric field that is not a number stays a
    string (so its row is quarantined for that field), a row without four fields stays as it was (malformed)."""
    line = F.col("line")
    fields = F.split(line, ",", -1)
    user, movie, rating, seconds = (F.trim(fields.getItem(i)) for i in range(4))
    blank = lambda c: F.when(F.length(c) > 0, c)  # noqa: E731 - empty CSV field -> missing
    user, movie = blank(user), blank(movie)
    ts_ms = F.when(seconds.rlike(SECONDS_PATTERN), (seconds.try_cast("bigint") * 1000).cast("string"))
    rating_num = F.when(rating.rlike(RATING_PATTERN), rating)
    event_id = F.when(
        user.isNotNull() & movie.isNotNull() & (F.length(seconds) > 0),
        F.concat_ws("-", F.lit(EVENT_ID_PREFIX), user, movie, seconds),
    )
    json = F.concat(
        F.lit('{"event_id":'),
        _json_string(event_id),
        F.lit(',"user_id":'),
        _json_string(user),
        F.lit(',"item_id":'),
        _json_string(movie),
        F.lit(',"event_type":"rating","ts":'),
        F.coalesce(ts_ms, _json_string(blank(seconds))),
        F.lit(',"value":'),
        F.coalesce(rating_num, _json_string(blank(rating))),
        F.lit("}"),
    )
    return lines.where((F.trim(line) != RATINGS_HEADER) & (F.length(F.trim(line)) > 0)).select(
        F.when(F.size(fields) == 4, json).otherwise(line).alias("raw"),
        *[F.col(name) for name in lines.columns if name != "line"],
    )


def read_movielens_movies(spark: SparkSession, path: Path | str) -> DataFrame:
    return spark.read.csv(
        str(path), header=True, schema="movieId STRING, title STRING, genres STRING", quote='"', escape='"'
    )


def movielens_movies_to_items(movies: DataFrame) -> DataFrame:
    """movies.csv rows -> catalog rows: genres as categories (first = category), title, year attribute."""
    genres = F.filter(
        F.split(F.coalesce(F.col("genres"), F.lit("")), r"\|"), lambda g: (F.length(g) > 0) & (g != NO_GENRE)
    )
    year = F.regexp_extract(F.col("title"), r"\((\d{4})\)\s*$", 1)
    attributes = F.when(F.length(year) > 0, F.create_map(F.lit("year"), year)).otherwise(
        F.create_map().cast("map<string,string>")
    )
    return catalog_rows(
        movies.select(
            F.trim(F.col("movieId")).alias("item_id"),
            F.get(genres, 0).alias("category"),
            genres.alias("categories"),
            F.col("title"),
            attributes.alias("attributes"),
            F.lit(None).cast("timestamp").alias("created_at"),
        )
    ).select(*ITEMS.columns)
