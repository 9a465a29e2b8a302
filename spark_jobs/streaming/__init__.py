"""The speed layer: a Spark Structured Streaming job from the event bus to Redis and Delta.

`redis_stream_source` (the default bus as a Spark source), `speed_features` (pure: events -> Redis
commands), `redis_apply` (idempotent application of a micro-batch), `speed_job` (the queries)."""
