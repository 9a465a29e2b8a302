"""Prometheus metrics of one API instance (GET /metrics).

Who uses it: `serving.app` (request latency, events) and `serving.recommender` (degraded answers,
model errors, prefetches). Each app owns its registry, so several apps in one process (tests) do not
collide. Cache hit/miss counts, the batch version and the model in use are read from the live objects
at scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.cache import BatchCache
from serving.models import ModelHolder

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class _LiveCollector(Collector):
    def __init__(self, cache: BatchCache, holder: ModelHolder, extra: Callable[[], dict[str, float]]) -> None:
        self.cache = cache
        self.holder = holder
        self.extra = extra

    def collect(self) -> Iterable:
        stats = self.cache.stats
        lookups = CounterMetricFamily(
            "lambdarec_cache_lookups",
            "Batch-version cache lookups by table and result.",
            labels=["table", "result"],
        )
        for table in stats.hits:
            lookups.add_metric([table, "hit"], stats.hits[table])
            lookups.add_metric([table, "miss"], stats.misses[table])
        yield lookups
        ratio = stats.hit_ratio()
        yield GaugeMetricFamily(
            "lambdarec_cache_hit_ratio",
            "Hits / lookups of the batch-version cache since start.",
            value=ratio if ratio is not None else float("nan"),
        )
        yield CounterMetricFamily(
            "lambdarec_cache_resets", "Cache resets (batch pointer flips seen).", value=self.cache.resets
        )
        batch = GaugeMetricFamily(
            "lambdarec_batch_version_info", "Batch version being served.", labels=["version"]
        )
        batch.add_metric([self.cache.version or ""], 1)
        yield batch
        model = GaugeMetricFamily(
            "lambdarec_model_info",
            "Ranker in use (version empty: none).",
            labels=["name", "version", "backend"],
        )
        current = self.holder.current
        model.add_metric([current.name, current.version, current.backend] if current else ["", "", ""], 1)
        yield model
        yield CounterMetricFamily(
            "lambdarec_model_swaps", "Rankers swapped in (start-up load included).", value=self.holder.swaps
        )
        yield CounterMetricFamily(
            "lambdarec_model_registry_errors",
            "Failed checks of the champion alias.",
            value=self.holder.registry_errors,
        )
        # With `lambdarec serve --workers N` each process answers its own scrapes: the pid tells them apart.
        yield GaugeMetricFamily(
            "lambdarec_worker_pid", "Process id of the API worker that answered.", value=os.getpid()
        )
        for name, value in self.extra().items():
            yield GaugeMetricFamily(f"lambdarec_{name}", name.replace("_", " "), value=value)


class ServingMetrics:
    def __init__(
        self, cache: BatchCache, holder: ModelHolder, extra: Callable[[], dict[str, float]] = dict
    ) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "lambdarec_request_seconds",
            "Request latency by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.degraded = Counter(
            "lambdarec_degraded_responses",
            "Answers served from the local fallback, by reason.",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.events = Counter(
            "lambdarec_events", "Events received by outcome.", ["outcome"], registry=self.registry
        )
        self.model_errors = Counter(
            "lambdarec_model_errors", "Ranker calls that failed (answer used priors).", registry=self.registry
        )
        self.refused = Counter(
            "lambdarec_refused_requests",
            "Requests refused at the edge, by reason (body_too_large, overloaded, rate_limited, forbidden).",
            ["reason"],
            registry=self.registry,
        )
        self.prefetches = Counter(
            "lambdarec_prefetches", "Per-user prefetches by outcome.", ["outcome"], registry=self.registry
        )
        self.registry.register(_LiveCollector(cache, holder, extra))

    def render(self) -> bytes:
        return generate_latest(self.registry)
