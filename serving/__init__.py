"""The serving layer: the HTTP API that merges batch and speed-layer signals and ranks them.

Entry point: `serving.app.create_app(settings)` (called by `lambdarec serve` and by tests). It reads
the online store through `feature_store` (keys, codecs) and the @champion ranker from MLflow; it never
imports `spark_jobs`.

Modules, in request order: `auth` (API keys), `app` (routes, lifespan, dependencies), `recommender`
(one request: store reads, candidates, ranking), `store` (pipelined Redis reads), `cache` (what changes
only with a batch version), `candidates` and `ranking` (pure logic), `models` (champion loading and hot
swap), `batcher` (micro-batching of model calls), `metrics` (Prometheus), `schemas` (the wire models).
"""
