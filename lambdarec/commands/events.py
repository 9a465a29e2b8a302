"""`lambdarec events publish FILE`: put events (JSON lines) on the event bus, for replays and demos.

Thin: reads the file, checks each line against the event contract (or sends lines verbatim with
`--raw`, to see the streaming job quarantine bad ones) and publishes in chunks through the bus the
settings name (feature_store.event_bus: the Redis Stream, or Kafka).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer


def read_lines(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\n")


def checked_payloads(
    lines: Iterable[str], *, now: datetime, future_tolerance: timedelta, raw: bool
) -> tuple[list, Counter]:
    """Lines -> what to publish (Events, or the lines themselves with `raw`) and rejected lines by reason."""
    from feature_store.event_bus import decode_payload
    from feature_store.events import QuarantineReason, validate_event_dict

    if raw:
        return list(lines), Counter()
    good, rejected = [], Counter()
    for line in lines:
        try:
            decoded = decode_payload(line)
        except ValueError:
            rejected[QuarantineReason.MALFORMED.value] += 1
            continue
        event, reason, _ = validate_event_dict(decoded, now=now, future_tolerance=future_tolerance)
        if event is None:
            rejected[reason.value] += 1
        else:
            good.append(event)
    return good, rejected


def _chunks(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def register(app: typer.Typer) -> None:
    events = typer.Typer(help="The event bus: publish events for replays and demos.", no_args_is_help=True)

    @events.command("publish")
    def publish_command(
        file: Path = typer.Argument(
            ..., exists=True, dir_okay=False, readable=True, help="JSON lines, one event per line."
        ),
        raw: bool = typer.Option(
            False,
            "--raw",
            help="Send lines verbatim, bad ones included (the streaming job quarantines them).",
        ),
        chunk_size: int = typer.Option(1_000, min=1, help="Events per pipelined round trip."),
    ) -> None:
        """Publish the events of FILE to the bus (LAMBDAREC_EVENT_STREAM, or LAMBDAREC_KAFKA_TOPIC when
        LAMBDAREC_EVENT_BUS=kafka); lines that break the event contract are counted and skipped unless --raw."""
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        from feature_store.event_bus import BusBacklogFull
        from feature_store.settings import load_settings
        from lambdarec.composition import event_publisher

        settings = load_settings()
        try:
            publisher = event_publisher(settings)
        except ValueError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        tolerance = timedelta(minutes=settings.batch.future_tolerance_minutes)
        published, rejected = 0, Counter()
        with file.open("rb") as sizer:
            total_bytes = sizer.seek(0, 2)
        with Progress(
            TextColumn("publishing"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[events]} events"),
            transient=True,
        ) as bar:
            task = bar.add_task("publish", total=total_bytes, events=0)
            for chunk in _chunks(read_lines(file), chunk_size):
                payloads, bad = checked_payloads(
                    chunk, now=datetime.now(UTC), future_tolerance=tolerance, raw=raw
                )
                try:
                    published += len(publisher.publish(payloads))
                except BusBacklogFull as exc:
                    publisher.close()
                    typer.secho(
                        f"{exc}; published {published} events, then stopped. Publish the file again once the job caught up: "
                        "each event_id counts once.",
                        fg=typer.colors.RED,
                        err=True,
                    )
                    raise typer.Exit(1) from exc
                rejected.update(bad)
                bar.update(task, advance=sum(len(line.encode()) + 1 for line in chunk), events=published)
        publisher.close()
        typer.echo(f"published {published} events to {publisher.destination}")
        if rejected:
            detail = ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items()))
            typer.secho(
                f"skipped {sum(rejected.values())} lines that break the event contract: {detail}",
                fg=typer.colors.YELLOW,
            )

    app.add_typer(events, name="events")
