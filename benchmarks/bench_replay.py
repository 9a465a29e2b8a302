"""Replay quality: does batch + speed beat batch only? (`make bench` runs it last: it uses every layer.)

Runs `lambdarec.replay.runner.run_replay` (the same code as `lambdarec replay`) on
- a synthetic set with session intents and taste drift (lambdarec.datagen), two passes with different
  slice sizes over the same batch and the same questions, so the slice size's effect is measured;
- ml-latest-small when present (benchmarks.common.movielens_dir), cut at the midnight leaving ~10% of
  the ratings after it; full mode only (its batch layer and replay take about 5 minutes on 2 cores, and
  `make bench QUICK=1` has 15 minutes for every benchmark).
Quick mode uses fewer events and fewer questions; the full run asks more (smaller standard errors).
`--datasets synthetic` or `--datasets movielens` runs one of the two (each result file says which ran).
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.common import (
    MOVIELENS_BATCH_SETTINGS,
    machine_info,
    main,
    movielens_dir,
    movielens_path,
    write_result,
)

NAME = "replay"
MODELS_ORDER = ("popularity", "batch_only", "batch_speed", "speed_neighbours", "speed_trending")

# The nightly job trains on [T - 2h, T - h) with h = 7 days, so the data span at least 15 days before T.
SYNTHETIC = {
    True: dict(events=30_000, users=500, items=600, days=18),
    False: dict(events=150_000, users=3_000, items=2_000, days=28),
}
SLICES_S = (60.0, 900.0)
TARGETS = {True: {"synthetic": 150, "movielens": 100}, False: {"synthetic": 1_000, "movielens": 800}}


def synthetic_dataset(quick: bool, out: Path) -> Path:
    from lambdarec.datagen import GeneratorConfig, generate

    generate(GeneratorConfig(**SYNTHETIC[quick], start=date(2026, 9, 1), seed=11), out)
    return out


def replay_one(
    spark,
    settings,
    name: str,
    source: Path,
    fmt: str,
    quick: bool,
    slices: tuple[float, ...],
    work: Path,
    variants: tuple = (),
) -> dict:
    from lambdarec.replay.runner import ReplayOptions, run_replay

    options = ReplayOptions(
        source=source,
        format=fmt,
        holdout_fraction=0.1,
        k=10,
        slice_s=slices,
        max_targets=TARGETS[quick][name],
        seed=0,
        warmup_days=7.0,
        variants=variants,
    )
    started = time.monotonic()
    result = run_replay(spark, settings, options, work / name)
    result["bench_wall_s"] = round(time.monotonic() - started, 1)
    return result


DATASETS = ("synthetic", "movielens")


def run(
    quick: bool, out_dir: Path, datasets: str = ",".join(DATASETS), variant: list[str] | None = None
) -> dict:
    """`datasets`: which replays to run, comma-separated (the full pair takes hours here, so a session
    can run them one at a time); movielens runs in full mode only. `variant`: serving ablations asked
    the same questions (`lambdarec replay --variant` syntax), reported beside the models."""
    from feature_store.settings import Settings
    from lambdarec.composition import spark_session
    from lambdarec.replay.runner import ServingVariant
    from lambdarec.replay.scoring import MODEL_TITLES

    chosen = chosen_datasets(datasets)
    variants = tuple(ServingVariant.parse(text) for text in variant or ())
    with tempfile.TemporaryDirectory(prefix="lambdarec-bench-replay-") as tmp:
        work = Path(tmp)
        settings = Settings(data_dir=work / "data", spark_master="local[2]", spark_shuffle_partitions=2)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        spark = spark_session(settings)
        runs: dict[str, dict] = {}
        errors: dict[str, str] = {}
        try:
            if "synthetic" in chosen:
                try:
                    runs["synthetic"] = replay_one(
                        spark,
                        settings,
                        "synthetic",
                        synthetic_dataset(quick, work / "synthetic-data"),
                        "jsonl",
                        quick,
                        SLICES_S,
                        work,
                        variants,
                    )
                except Exception as exc:  # one data set failing must not lose the other's numbers
                    errors["synthetic"] = f"{type(exc).__name__}: {exc}"
            ml = None if quick or "movielens" not in chosen else movielens_dir()
            missing = movielens_missing(chosen, quick, ml, movielens_path())
            if missing:
                errors["movielens"] = missing
            if ml is not None:
                try:
                    runs["movielens"] = replay_one(
                        spark,
                        settings.updated(**MOVIELENS_BATCH_SETTINGS),
                        "movielens",
                        ml / "ratings.csv",
                        "movielens",
                        quick,
                        SLICES_S[:1],
                        work,
                        variants,
                    )
                except Exception as exc:
                    errors["movielens"] = f"{type(exc).__name__}: {exc}"
        finally:
            spark.stop()
    if not runs:
        raise RuntimeError(f"every replay failed: {errors}")
    result = report(runs, quick, MODEL_TITLES)
    if errors:
        result["errors"] = errors
    return write_result(out_dir, NAME, result)


def movielens_missing(chosen: tuple[str, ...], quick: bool, found: Path | None, looked: Path) -> str | None:
    """Why a full run asked for ml-latest-small replays none (quick mode skips it on purpose)."""
    if quick or "movielens" not in chosen or found is not None:
        return None
    return f"ml-latest-small not found at {looked}: set LAMBDAREC_MOVIELENS_DIR"


def chosen_datasets(datasets: str) -> tuple[str, ...]:
    """The data sets named in a comma-separated list, in the benchmark's order; an unknown name is an error."""
    names = tuple(name.strip() for name in datasets.split(",") if name.strip())
    unknown = sorted(set(names) - set(DATASETS))
    if unknown or not names:
        raise ValueError(
            f"--datasets takes a comma-separated subset of {', '.join(DATASETS)}; got {datasets!r}"
        )
    return tuple(name for name in DATASETS if name in names)


def single_source_rows(label: str, one: dict, titles: dict[str, str]) -> list[list]:
    """One row per single-source answer of a replay pass: batch + speed minus it, paired over the same
    questions, and the ratio of their hit rates (issue 18's target: >= 1.2x the best of them)."""
    rows = []
    for source, diff in one.get("batch_speed_minus_single_source", {}).items():
        alone, full = one["models"][source]["hr@10"], one["models"]["batch_speed"]["hr@10"]
        rows.append(
            [
                label,
                titles.get(source, source),
                f"{diff['hr@10']['mean']:+.4f} ± {diff['hr@10']['se']:.4f}",
                f"{diff['ndcg@10']['mean']:+.4f} ± {diff['ndcg@10']['se']:.4f}",
                f"{full / alone:.3f}x" if alone > 0 else "n/a (no hit alone)",
            ]
        )
    return rows


def report(runs: dict[str, dict], quick: bool, titles: dict[str, str]) -> dict:
    """The result dict: every run's numbers plus the report's tables and plots."""
    machine = machine_info()
    quality_rows, diff_rows, fresh_rows, info_rows, variant_rows, source_rows = [], [], [], [], [], []
    plot_lines: dict[str, list[float]] = {}
    for name, run in runs.items():
        info_rows.append(
            [
                name,
                run["cutoff"],
                run["events_before_cutoff"],
                run["events_held_out"],
                run["targets_eligible"],
                run["targets_asked"],
                run["users_asked"],
                run["users_asked_new"],
                run["batch"]["batch_s"],
                run["wall_s"],
            ]
        )
        for one in run["passes"]:
            label = f"{name}, slices ≤ {one['slice_s']:g} s"
            for model in (*MODELS_ORDER, *one.get("batch_speed_minus_variant", {})):
                m = one["models"][model]
                quality_rows.append(
                    [
                        label,
                        titles.get(model, f"ablation: {model}"),
                        round(m["hr@10"], 4),
                        round(m["hr_se"], 4),
                        round(m["ndcg@10"], 4),
                        round(m["mrr@10"], 4),
                        round(m["coverage@10"], 4),
                    ]
                )
            d = one["batch_speed_minus_batch_only"]
            diff_rows.append(
                [
                    label,
                    f"{d['hr@10']['mean']:+.4f} ± {d['hr@10']['se']:.4f}",
                    f"{d['ndcg@10']['mean']:+.4f} ± {d['ndcg@10']['se']:.4f}",
                    f"{d['mrr@10']['mean']:+.4f} ± {d['mrr@10']['se']:.4f}",
                    one["rounds"],
                    one["wall_s"],
                ]
            )
            source_rows.extend(single_source_rows(label, one, titles))
            for variant, diff in one.get("batch_speed_minus_variant", {}).items():
                variant_rows.append(
                    [
                        label,
                        variant,
                        f"{diff['hr@10']['mean']:+.4f} ± {diff['hr@10']['se']:.4f}",
                        f"{diff['ndcg@10']['mean']:+.4f} ± {diff['ndcg@10']['se']:.4f}",
                    ]
                )
            f = one["freshness_ms"]
            fresh_rows.append([label, f["samples"], f["p50"], f["p95"], f["p99"], f["max"]])
            plot_lines[label] = [round(one["models"][model]["hr@10"], 4) for model in MODELS_ORDER]
    tables = [
        {
            "title": "Replays (batch trained at the cut-off; times in seconds)",
            "columns": [
                "data set",
                "cut-off T",
                "events before T",
                "events after T",
                "first-time held-out events",
                "asked",
                "users asked",
                "of them new after T",
                "batch layer s",
                "replay wall s",
            ],
            "rows": info_rows,
        },
        {
            "title": "Quality by model (one question per sampled held-out event; HR s.e. = standard error)",
            "columns": ["replay", "model", "HR@10", "HR s.e.", "NDCG@10", "MRR@10", "coverage@10"],
            "rows": quality_rows,
        },
        {
            "title": "batch + speed − batch only, paired over the same questions (mean ± s.e.)",
            "columns": ["replay", "ΔHR@10", "ΔNDCG@10", "ΔMRR@10", "rounds", "pass wall s"],
            "rows": diff_rows,
        },
        {
            "title": "Freshness observed in the replay: slice published on the bus → applied by the streaming job (ms)",
            "columns": ["replay", "rounds", "p50", "p95", "p99", "max"],
            "rows": fresh_rows,
        },
    ]
    if source_rows:
        tables.append(
            {
                "title": "batch + speed − each single-source answer, paired over the same questions (mean ± s.e.)",
                "columns": ["replay", "single source", "ΔHR@10", "ΔNDCG@10", "HR@10 ratio"],
                "rows": source_rows,
            }
        )
    if variant_rows:
        tables.append(
            {
                "title": "batch + speed − each ablation, paired over the same questions (mean ± s.e.)",
                "columns": ["replay", "ablation", "ΔHR@10", "ΔNDCG@10"],
                "rows": variant_rows,
            }
        )
    effect = runs.get("synthetic", {}).get("slice_size_effect")
    if effect:
        tables.append(
            {
                "title": f"Slice size effect on the synthetic set: HR@10 with {SLICES_S[0]:g} s − with {SLICES_S[1]:g} s slices (paired)",
                "columns": ["model", "ΔHR@10", "s.e."],
                "rows": [[titles[m], round(v["mean"], 4), round(v["se"], 4)] for m, v in effect.items()],
            }
        )
    note = "; ".join(
        f"{name}: batch+speed / batch only = {ratio(run['passes'][0]['models']['batch_speed']['hr@10'], run['passes'][0]['models']['batch_only']['hr@10'])}"
        for name, run in runs.items()
    )
    plots = [
        {
            "title": "Replay quality by model (HR@10)",
            "kind": "bar",
            "note": note,
            "x_label": "model",
            "y_label": "HR@10",
            "x": ["popularity", "batch only", "batch+speed", "speed: neighbours", "speed: trending"],
            "lines": plot_lines,
        }
    ]
    return {
        "title": "Replay evaluation: batch vs batch + speed through the real layers",
        "summary": summary_text(runs),
        "quick": quick,
        "machine": machine,
        "runs": runs,
        "tables": tables,
        "plots": plots,
    }


def summary_text(runs: dict[str, dict]) -> str:
    lines = []
    for name, run in runs.items():
        one = run["passes"][0]
        m = one["models"]
        d = one["batch_speed_minus_batch_only"]["hr@10"]
        lines.append(
            f"- **{name}**: HR@10 batch + speed {m['batch_speed']['hr@10']:.3f} vs batch only {m['batch_only']['hr@10']:.3f} "
            f"(paired Δ {d['mean']:+.3f} ± {d['se']:.3f}), popularity {m['popularity']['hr@10']:.3f}; "
            f"ratio batch + speed / batch only = {ratio(m['batch_speed']['hr@10'], m['batch_only']['hr@10'])}."
        )
    return "\n".join(lines)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "n/a (batch only has no hit)"


if __name__ == "__main__":
    main(
        run,
        {
            "--datasets": dict(default=",".join(DATASETS), help="comma-separated: synthetic, movielens"),
            "--variant": dict(action="append", help="NAME:speed|batch:SETTING=VALUE[,...] (repeatable)"),
        },
    )
