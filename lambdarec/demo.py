"""`lambdarec demo`: the whole loop on a laptop, with embedded services and no manual steps.

Called by `lambdarec demo` (`make demo`) and `lambdarec demo-stop` (`make demo-stop`). Each stage is
a small function that takes settings and a console and returns what it did, so the demo reads top to
bottom in `run_demo`:

1. services: the private redis-server, the MLflow UI, `airflow standalone` (ports checked first);
2. data in: synthetic events (ending yesterday, so the nightly run of today's data interval covers
   them) or MovieLens, validated into bronze (rows in, rows quarantined by reason, tables written);
3. the batch layer: `lambdarec_nightly` triggered through Airflow's REST API for the data's interval,
   waited for task by task;
4. the speed layer and the API: `lambdarec stream start --background`, `lambdarec serve`;
5. live events: a few users' new events go through `POST /v1/events`; for one of them the demo prints
   the recommendations before and after, and which sources changed;
6. a summary: rows processed, the champion's metrics, the p50 latency the demo saw, the UIs' URLs.

Services the demo starts keep running after it ends; `lambdarec demo-stop` stops them all.

Why one module: it is a narrated script, read top to bottom in `run_demo`, each stage a small function.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from feature_store.settings import Settings, project_root

Dataset = Literal["synthetic", "movielens"]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says what was wrong and what to do."""


@dataclass(frozen=True)
class DemoData:
    """What the demo loads: a source the ingest reads and its format."""

    dataset: Dataset
    source: Path
    fmt: str


@dataclass
class DemoSummary:
    """What the demo prints at the end."""

    rows_read: int = 0
    rows_ingested: int = 0
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    pipeline_date: date | None = None
    nightly_run: str | None = None
    nightly_state: str | None = None
    champion: dict = field(default_factory=dict)  # version, run id, metrics
    latencies_ms: list[float] = field(default_factory=list)
    sources_before: dict[str, int] = field(default_factory=dict)
    sources_after: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def default_movielens_dir() -> Path:
    """ml-latest-small next to the repository (../shared/data/ml-latest-small)."""
    return project_root().parent / "shared" / "data" / "ml-latest-small"


def synthetic_config(today: date, events: int = 40_000, days: int = 14):
    """A small synthetic world whose last day is yesterday: the nightly run keyed on today's data
    interval is exactly the run that covers it. Users and items scale with the events."""
    from lambdarec.datagen import GeneratorConfig

    return GeneratorConfig(
        events=events,
        users=max(50, events // 50),
        items=max(40, events // 100),
        new_items_per_day=3.0,
        categories=8,
        days=days,
        start=today - timedelta(days=days),
        bad_fraction=0.02,
        seed=7,
    )


def demo_data(
    settings: Settings, dataset: Dataset, path: Path | None, today: date, console, events: int = 40_000
) -> DemoData:
    """Generate the synthetic data set, or find the MovieLens folder."""
    if dataset == "movielens":
        folder = (path or default_movielens_dir()).expanduser().resolve()
        if not (folder / "ratings.csv").exists():
            raise DemoError(
                f"No MovieLens ratings.csv in {folder}. Pass --path to an ml-latest-small folder "
                "(ratings.csv + movies.csv), or run the demo on synthetic data (the default)."
            )
        return DemoData("movielens", folder, "movielens")
    from lambdarec.datagen import generate

    out = path or settings.data_dir / "demo" / "generated"
    # The nightly trains on features as of D-2h and judges on D-h (h = label horizon): give the
    # training cut-off as many days of history before it as the labels and holdout take after it.
    config = synthetic_config(today, events, days=max(14, 4 * settings.batch.label_horizon_days))
    manifest = generate(config, out)
    console.print(
        f"generated {manifest.rows_total:,} rows ({manifest.good_rows:,} good, {manifest.bad_total:,} bad) for "
        f"{manifest.users:,} users and {manifest.items:,} items, {config.start} .. {config.start + timedelta(days=config.days - 1)}"
    )
    return DemoData("synthetic", out, "jsonl")


def last_event_date(spark, settings: Settings) -> date:
    """The newest event date in bronze: the pipeline runs as of the day after it."""
    from pyspark.sql import functions as F

    from feature_store.tables import BRONZE_EVENTS
    from spark_jobs.delta_io import read_table

    newest = read_table(spark, settings, BRONZE_EVENTS).agg(F.max("event_date")).first()[0]
    if newest is None:
        raise DemoError(
            "bronze/events is empty after the ingest: every row was quarantined (see the report above)"
        )
    return newest


def load_data(spark, settings: Settings, data: DemoData, summary: DemoSummary, console) -> date:
    """Ingest the data into bronze, print the report, and return the pipeline date."""
    from lambdarec.reports import print_ingest_report
    from spark_jobs.ingest import ingest

    report = ingest(spark, settings, data.source, data.fmt, datetime.now(UTC))
    print_ingest_report(console, report)
    summary.rows_read = report.rows_read
    summary.rows_ingested = report.ingested
    summary.rows_quarantined = dict(report.quarantined)
    return last_event_date(spark, settings) + timedelta(days=1)


@dataclass(frozen=True)
class DemoWorld:
    """What the live-events stage needs to know about the data, collected while Spark is up."""

    users: list[str]  # a few users of typical activity, the first one is shown in detail
    popular_by_category: dict[str, list[str]]  # category -> its most popular items
    event_type: str  # what the demo users do: `click` (synthetic) or `rating` (MovieLens)


def demo_world(
    spark, settings: Settings, dataset: Dataset, users: int = 3, per_category: int = 8
) -> DemoWorld:
    """Typical users (median activity) and each category's most popular items, from bronze."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from feature_store.tables import BRONZE_EVENTS, ITEMS
    from spark_jobs.delta_io import read_table

    events = read_table(spark, settings, BRONZE_EVENTS)
    activity = events.groupBy("user_id").count().orderBy("count", "user_id").collect()
    middle = len(activity) // 2
    chosen = [row["user_id"] for row in activity[middle : middle + users]]
    items = (
        read_table(spark, settings, ITEMS).select("item_id", "category").where(F.col("category").isNotNull())
    )
    ranked = (
        events.groupBy("item_id")
        .count()
        .join(items, "item_id")
        .withColumn(
            "rank", F.row_number().over(Window.partitionBy("category").orderBy(F.desc("count"), "item_id"))
        )
        .where(F.col("rank") <= per_category)
        .orderBy("category", "rank")
        .collect()
    )
    popular: dict[str, list[str]] = {}
    for row in ranked:
        popular.setdefault(row["category"], []).append(row["item_id"])
    return DemoWorld(chosen, popular, "rating" if dataset == "movielens" else "click")


# -- services ----------------------------------------------------------------------------------------


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of every process the demo starts: its settings as LAMBDAREC_* variables."""
    from lambdarec.airflow_local import settings_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAREC_")}
    env.update(settings_env(settings))
    return env


def _lambdarec() -> str:
    return str(Path(sys.executable).parent / "lambdarec")


def api_url(settings: Settings) -> str:
    return f"http://{settings.serving.host}:{settings.serving.port}"


def check_ports(settings: Settings) -> None:
    """Every port the demo needs is free or held by the demo's own service (a clear error otherwise)."""
    from lambdarec.airflow_local import AIRFLOW_SERVICE, MLFLOW_UI_SERVICE
    from lambdarec.local_services import ServiceSpec, ensure_port_free, running_pid

    needed = [
        (MLFLOW_UI_SERVICE, settings.mlflow.ui_port, "LAMBDAREC_MLFLOW_UI_PORT"),
        (AIRFLOW_SERVICE, settings.airflow.port, "LAMBDAREC_AIRFLOW_PORT"),
        (API_SERVICE, settings.serving.port, "LAMBDAREC_API_PORT"),
    ]
    for name, port, setting in needed:
        if running_pid(settings.run_dir, name) is None:
            ensure_port_free(ServiceSpec(name, [], port=port, port_setting=setting))


API_SERVICE = "api"


def start_api(settings: Settings, timeout_s: float = 120.0) -> str:
    from lambdarec.local_services import ServiceSpec, http_ok, start_service

    url = api_url(settings)
    spec = ServiceSpec(
        API_SERVICE,
        [
            _lambdarec(),
            "serve",
            "--host",
            settings.serving.host,
            "--port",
            str(settings.serving.port),
            "--log-level",
            "warning",
        ],
        port=settings.serving.port,
        host=settings.serving.host,
        env=child_env(settings),
        port_setting="LAMBDAREC_API_PORT",
    )
    start_service(spec, settings.run_dir, lambda: http_ok(f"{url}/healthz"), timeout_s)
    return url


def start_stream(settings: Settings) -> None:
    """The streaming job in the background (it resumes from its checkpoint if it ran before)."""
    done = subprocess.run(
        [_lambdarec(), "stream", "start", "--background"],
        env=child_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise DemoError(f"the streaming job did not start: {(done.stderr or done.stdout).strip()[-800:]}")


def wait_ready(settings: Settings, timeout_s: float = 120.0) -> dict:
    """Wait until /readyz says the API reads Redis and a published batch; returns its answer."""
    import httpx

    url = f"{api_url(settings)}/readyz"
    deadline = time.monotonic() + timeout_s
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            last = response.json()
            # Without a champion (no model passed the gate yet) the API still answers from the batch's
            # candidate scores: Redis and a published batch are what the demo needs.
            if last.get("redis") and last.get("batch_version"):
                return last
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise DemoError(f"the API was not ready within {timeout_s:.0f}s: {last}")


# -- the batch layer through Airflow --------------------------------------------------------------------


def run_nightly(
    settings: Settings, client, pipeline_date: date, console, timeout_s: float = 3600.0
) -> tuple[str, str]:
    """Trigger lambdarec_nightly for the data interval that ends on the pipeline date and wait for it.

    The run carries the same logical date and interval as the scheduled run of that day, so unpausing
    the DAG does not start a second run of the same interval.
    """
    from lambdarec.airflow_local import AirflowError, midnight_utc

    dag_id = "lambdarec_nightly"
    client.wait_for_dags((dag_id, "lambdarec_streaming_watchdog"))
    start, end = midnight_utc(pipeline_date - timedelta(days=1)), midnight_utc(pipeline_date)
    run_id = f"demo__{pipeline_date.isoformat()}"
    try:
        client.request(
            "POST",
            f"/dags/{dag_id}/dagRuns",
            json={
                "dag_run_id": run_id,
                "logical_date": start.isoformat(),
                "data_interval_start": start.isoformat(),
                "data_interval_end": end.isoformat(),
                "conf": {},
                "note": "triggered by `lambdarec demo`",
            },
        )
        console.print(f"triggered {dag_id} run {run_id} (data interval {start.date()} .. {end.date()})")
    except AirflowError as error:
        if " 409:" not in str(error):
            raise
        # A demo rerun on the same data directory: run the same interval again.
        client.request(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
        )
        console.print(f"cleared {dag_id} run {run_id} to run it again")
    client.unpause(dag_id)
    seen: dict[str, str | None] = {}

    def show(states: dict[str, str | None]) -> None:
        for task_id, state in states.items():
            if state != seen.get(task_id) and state in (
                "running",
                "success",
                "failed",
                "upstream_failed",
                "up_for_retry",
            ):
                console.print(f"  {time.strftime('%H:%M:%S')}  {task_id:<15} {state}")
        seen.update(states)

    state = client.wait_for_run(dag_id, run_id, timeout_s, on_poll=show)
    if pipeline_date != datetime.now(UTC).date():
        # Historical data (MovieLens): keep the scheduler from running today's interval over it.
        client.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    return run_id, state


def champion_summary(settings: Settings) -> dict:
    """The champion's version and its run's metrics from MLflow's registry."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    try:
        version = client.get_model_version_by_alias(settings.ranker.model_name, "champion")
    except MlflowException:
        return {}
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return {
        "name": settings.ranker.model_name,
        "version": version.version,
        "run_id": version.run_id,
        "metrics": metrics,
    }


# -- live events ----------------------------------------------------------------------------------------


def recommendations(settings: Settings, user_id: str, latencies_ms: list[float], k: int = 10) -> dict:
    import httpx

    started = time.perf_counter()
    response = httpx.get(f"{api_url(settings)}/v1/recommendations/{user_id}", params={"k": k}, timeout=5.0)
    latencies_ms.append((time.perf_counter() - started) * 1000.0)
    response.raise_for_status()
    return response.json()


def new_interest(world: DemoWorld, before: dict) -> tuple[str, list[str]]:
    """A category the user's current recommendations do not show, and its popular items."""
    shown = Counter(item.get("category") for item in before["items"])
    candidates = sorted(
        world.popular_by_category, key=lambda c: (shown.get(c, 0), -len(world.popular_by_category[c]), c)
    )
    if not candidates:
        raise DemoError("the catalog has no categories to show new interest in")
    category = candidates[0]
    return category, world.popular_by_category[category][:4]


def interest_events(user_id: str, items: list[str], event_type: str, now_ms: int) -> list[dict]:
    """The user's new events on the items, a second apart, in the event contract's wire form."""
    events = []
    for offset, item_id in enumerate(items):
        event = {
            "event_id": f"demo-{uuid.uuid4().hex}",
            "user_id": user_id,
            "item_id": item_id,
            "event_type": event_type,
            "ts": now_ms - (len(items) - offset) * 1000,
        }
        if event_type == "rating":
            event["value"] = 5.0
        events.append(event)
    return events


def post_events(settings: Settings, events: list[dict]) -> None:
    import httpx

    response = httpx.post(f"{api_url(settings)}/v1/events", json={"events": events}, timeout=5.0)
    if response.status_code != 202:
        raise DemoError(f"POST /v1/events answered {response.status_code}: {response.text[:300]}")


def wait_for_change(
    settings: Settings, user_id: str, before: dict, latencies_ms: list[float], timeout_s: float = 180.0
) -> dict:
    """Poll the user's recommendations until the speed layer's signals show up in them."""
    deadline = time.monotonic() + timeout_s
    after = before
    while time.monotonic() < deadline:
        after = recommendations(settings, user_id, latencies_ms)
        if [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]:
            return after
        time.sleep(0.25)
    raise DemoError(
        f"the recommendations of {user_id} did not change within {timeout_s:.0f}s of their new events"
    )


def print_before_after(console, user_id: str, category: str, before: dict, after: dict) -> None:
    from rich.table import Table

    table = Table(title=f"recommendations for {user_id}, before and after new interest in {category!r}")
    for column in ("#", "before", "source", "after", "source (after)"):
        table.add_column(column)
    rows = max(len(before["items"]), len(after["items"]))
    for rank in range(rows):
        left = before["items"][rank] if rank < len(before["items"]) else None
        right = after["items"][rank] if rank < len(after["items"]) else None
        table.add_row(
            str(rank + 1),
            f"{left['item_id']} ({left.get('category')})" if left else "",
            left["source"] if left else "",
            f"{right['item_id']} ({right.get('category')})" if right else "",
            (right["source"] + (f" ← {right['because']}" if right.get("because") else "")) if right else "",
        )
    console.print(table)


def live_events(settings: Settings, world: DemoWorld, summary: DemoSummary, console) -> None:
    """New events through the API: a few users take up an interest their recommendations do not show;
    for the first one the demo prints the recommendations before and after."""
    featured, others = world.users[0], world.users[1:]
    before = recommendations(settings, featured, summary.latencies_ms)
    category, items = new_interest(world, before)
    now_ms = int(time.time() * 1000)
    # The others browse the category's popular items first: their sessions are the speed layer's fresh
    # co-visitation, which the featured user's two events then lead to ("people who viewed X also ...").
    for user_id in others:
        post_events(settings, interest_events(user_id, items, world.event_type, now_ms - 5000))
    post_events(settings, interest_events(featured, items[:2], world.event_type, now_ms))
    console.print(
        f"sent `{world.event_type}` events on {category!r} items through POST /v1/events: "
        f"{len(others)} users on {', '.join(items)}, then {featured} on {', '.join(items[:2])}"
    )
    after = wait_for_change(settings, featured, before, summary.latencies_ms)
    print_before_after(console, featured, category, before, after)
    summary.sources_before = dict(Counter(i["source"] for i in before["items"]))
    summary.sources_after = dict(Counter(i["source"] for i in after["items"]))
    changed = sorted(set(summary.sources_before) | set(summary.sources_after))
    console.print(
        "sources: "
        + ", ".join(
            f"{s} {summary.sources_before.get(s, 0)} → {summary.sources_after.get(s, 0)}" for s in changed
        )
    )
    # A short, bounded burst so the p50 reflects a warm API rather than the first requests.
    for index in range(60):
        recommendations(settings, world.users[index % len(world.users)], summary.latencies_ms)


# -- the whole demo ------------------------------------------------------------------------------------


class _Stage:
    """Times one stage of the demo and prints its title."""

    def __init__(self, title: str, summary: DemoSummary, console) -> None:
        self.title, self.summary, self.console = title, summary, console

    def __enter__(self) -> _Stage:
        self.console.rule(f"[bold]{self.title}")
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.summary.timings_s[self.title] = round(time.monotonic() - self.started, 1)


def print_urls(settings: Settings, password: str, console) -> None:
    from lambdarec.airflow_local import airflow_url, mlflow_ui_url

    console.print(
        f"Airflow UI : {airflow_url(settings)}  (user {settings.airflow.admin_user}, password {password})"
    )
    console.print(f"MLflow UI  : {mlflow_ui_url(settings)}")
    console.print(f"API docs   : {api_url(settings)}/docs")
    console.print(
        "These services keep running; stop them all with `make demo-stop` (or `lambdarec demo-stop`)."
    )


def print_summary(settings: Settings, summary: DemoSummary, password: str, console) -> None:
    console.rule("[bold]summary")
    quarantined = sum(summary.rows_quarantined.values())
    console.print(
        f"rows read: {summary.rows_read:,}  ingested: {summary.rows_ingested:,}  quarantined: {quarantined:,} "
        f"({', '.join(f'{k} {v:,}' for k, v in summary.rows_quarantined.items()) or 'none'})"
    )
    console.print(
        f"nightly run {summary.nightly_run}: {summary.nightly_state} (pipeline date {summary.pipeline_date})"
    )
    if summary.champion:
        metrics = summary.champion["metrics"]
        shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in sorted(metrics)[:10])
        console.print(f"champion: {summary.champion['name']} v{summary.champion['version']}  {shown}")
    else:
        console.print("champion: none (no model passed the promotion gate)")
    if summary.latencies_ms:
        console.print(
            f"GET /v1/recommendations seen by the demo: p50 {statistics.median(summary.latencies_ms):.1f} ms "
            f"over {len(summary.latencies_ms)} requests (client side, loopback)"
        )
    console.print("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in summary.timings_s.items()))
    console.print(f"all state is under {settings.data_dir}")
    print_urls(settings, password, console)


def start_services(settings: Settings, console) -> str:
    """MLflow UI and Airflow; returns Airflow's admin password."""
    from lambdarec.airflow_local import start_airflow, start_mlflow_ui

    console.print(f"MLflow UI on {start_mlflow_ui(settings, child_env(settings))}")
    console.print(
        "starting Airflow (standalone, parallelism "
        f"{settings.airflow.parallelism}); the first start migrates its database…"
    )
    password = start_airflow(settings, child_env(settings))
    console.print(f"Airflow on port {settings.airflow.port} is healthy")
    return password


def run_demo(
    settings: Settings,
    dataset: Dataset,
    path: Path | None,
    console,
    today: date | None = None,
    services_only: bool = False,
    events: int = 40_000,
) -> DemoSummary:
    """The demo, stage by stage; returns what it measured."""
    from lambdarec.airflow_local import AirflowClient, airflow_url
    from lambdarec.composition import redis_url, spark_session

    today = today or datetime.now(UTC).date()
    summary = DemoSummary()
    check_ports(settings)
    with _Stage("services", summary, console):
        settings = settings.updated(redis_url=redis_url(settings))
        console.print(f"redis-server at {settings.redis.url}")
        password = start_services(settings, console)
    if services_only:
        start_stream(settings)
        start_api(settings)
        print_urls(settings, password, console)
        return summary
    with _Stage("data in", summary, console):
        data = demo_data(settings, dataset, path, today, console, events)
        spark = spark_session(settings)
        summary.pipeline_date = load_data(spark, settings, data, summary, console)
        world = demo_world(spark, settings, dataset)
        spark.stop()
    with _Stage("nightly batch (Airflow)", summary, console):
        client = AirflowClient(airflow_url(settings), settings.airflow.admin_user, password)
        summary.nightly_run, summary.nightly_state = run_nightly(
            settings, client, summary.pipeline_date, console
        )
        if summary.nightly_state != "success":
            raise DemoError(
                f"lambdarec_nightly run {summary.nightly_run} ended {summary.nightly_state}: see its logs in the Airflow UI ({airflow_url(settings)})"
            )
        summary.champion = champion_summary(settings)
    with _Stage("speed layer and API", summary, console):
        start_stream(settings)
        console.print("streaming job running")
        start_api(settings)
        readiness = wait_ready(settings)
        console.print(
            f"API ready: model {readiness.get('model')}, batch version {readiness.get('batch_version')}"
        )
        client.unpause("lambdarec_streaming_watchdog")
    with _Stage("live events", summary, console):
        live_events(settings, world, summary, console)
    print_summary(settings, summary, password, console)
    return summary


def stop_demo(settings: Settings) -> list[str]:
    """Stop every service the demo started; returns what was stopped."""
    from lambdarec.airflow_local import stop_airflow, stop_mlflow_ui
    from lambdarec.local_services import stop_service
    from lambdarec.redis_server import stop_shared_redis

    stopped = []
    # Airflow first: its watchdog would otherwise restart the streaming job we are about to stop.
    if stop_airflow(settings):
        stopped.append("airflow")
    if stop_service(API_SERVICE, settings.run_dir):
        stopped.append("api")
    done = subprocess.run(
        [_lambdarec(), "stream", "stop"], env=child_env(settings), capture_output=True, text=True, check=False
    )
    if done.returncode == 0 and "stopped" in done.stdout and "not running" not in done.stdout:
        stopped.append("streaming job")
    if stop_mlflow_ui(settings):
        stopped.append("mlflow-ui")
    if stop_shared_redis(settings.run_dir):
        stopped.append("redis-server")
    return stopped
