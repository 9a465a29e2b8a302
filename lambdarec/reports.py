"""Reports as a person reads them, printed by the CLI commands and the demo."""

from __future__ import annotations


def print_ingest_report(console, report) -> None:
    """The ingest report of `lambdarec ingest` and the demo."""
    console.print(
        f"[bold]ingested[/bold] {report.source} ({report.format}, {len(report.event_files)} file(s))"
    )
    console.print(f"  rows read:        {report.rows_read:,}")
    console.print(f"  new in bronze:    {report.ingested:,}")
    console.print(f"  already present:  {report.already_present:,}")
    console.print(f"  quarantined:      {report.quarantined_total:,} ({report.quarantine_added:,} new)")
    for reason, count in report.quarantined.items():
        console.print(f"    {reason}: {count:,}")
    if report.catalog_file:
        console.print(
            f"  catalog:          {report.items_inserted:,} new items, {report.items_updated:,} updated ({report.catalog_file})"
        )
    for name, path in report.tables.items():
        console.print(f"  table {name}: {path}")
