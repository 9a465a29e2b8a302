"""Render benchmark results (dicts following benchmarks/common.py's convention) as REPORT.md + PNG plots.

Written analyses (an investigation, an ablation read from committed result files) live one per file in
`benchmarks/analyses/*.md` and are appended after the generated sections, so regenerating the report
keeps them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(spec: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if spec.get("kind") == "bar":  # categories on x (e.g. models), one group of bars per x
        _bars(ax, spec)
    else:
        for name, ys in spec["lines"].items():
            ax.plot(spec["x"], ys, marker="o", label=name)
    ax.set_title(
        spec["title"] + (f"\n{spec['note']}" if spec.get("note") else ""),
        fontsize=10 if spec.get("note") else 12,
    )
    ax.set_xlabel(spec.get("x_label", ""))
    ax.set_ylabel(spec.get("y_label", ""))
    if spec.get("log_y"):
        ax.set_yscale("log")
    if spec.get("machine"):
        fig.text(0.99, 0.01, spec["machine"], ha="right", va="bottom", fontsize=7, color="gray")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax, spec: dict) -> None:
    lines = spec["lines"]
    width = 0.8 / max(1, len(lines))
    positions = range(len(spec["x"]))
    for n, (name, ys) in enumerate(lines.items()):
        ax.bar([p + (n - (len(lines) - 1) / 2) * width for p in positions], ys, width=width, label=name)
    ax.set_xticks(list(positions))
    ax.set_xticklabels([str(x) for x in spec["x"]], fontsize=8)


def _mode(result: dict, quick: bool) -> str:
    """Say so when a section's mode differs from the run's (re-run alone with `--only`)."""
    if "quick" not in result or result["quick"] == quick:
        return ""
    return " (quick mode)" if result["quick"] else " (full mode)"


def _machine_line(machine: dict | None) -> str:
    if not machine:
        return ""
    return f"{machine.get('cores')} cores, {machine.get('memory_gib')} GiB, Python {machine.get('python')}"


def write_report(results: dict[str, dict], out_dir: Path, report_path: Path, quick: bool) -> Path:
    plots_dir = report_path.parent / "plots"
    sections = [
        "# lambdarec benchmark report",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `make bench{' QUICK=1' if quick else ''}`; "
        f"raw results in `{out_dir.relative_to(report_path.parent.parent) if out_dir.is_relative_to(report_path.parent.parent) else out_dir}`. "
        "Speeds are ratios against a baseline measured in the same run on the same machine.",
        "",
        markdown_table(
            ["benchmark", "wall time s", "result"],
            [
                [
                    result.get("title", name),
                    result.get("wall_s", "?"),
                    "failed" if "error" in result else "ok",
                ]
                for name, result in results.items()
            ],
        ),
    ]
    for name, result in results.items():
        machine = _machine_line(result.get("machine"))
        sections += [
            "",
            f"## {result.get('title', name)}",
            "",
            f"Machine: {machine}. Wall time: {result.get('wall_s', '?')} s{_mode(result, quick)}.",
        ]
        if "error" in result:
            sections += ["", f"**Failed:** `{result['error']}`"]
            continue
        if result.get("summary"):
            sections += ["", str(result["summary"])]
        for table in result.get("tables", []):
            sections += ["", f"**{table['title']}**", "", markdown_table(table["columns"], table["rows"])]
        for i, spec in enumerate(result.get("plots", [])):
            path = plot({**spec, "machine": machine}, plots_dir / f"{name}-{i}.png")
            sections += ["", f"![{spec['title']}](plots/{path.name})"]
    analyses = report_path.parent / "analyses"
    for analysis in sorted(analyses.glob("*.md")) if analyses.is_dir() else []:
        sections += ["", analysis.read_text().strip()]
    report_path.write_text("\n".join(sections) + "\n")
    return report_path
