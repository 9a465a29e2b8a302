"""The nightly's step bodies by concern: `data` (features, candidates, training set), `models` (train,
evaluate, promote), `serving` (score, publish, expire), and the `context` every step gets.
spark_jobs.batch_pipeline runs them in the order feature_store.nightly declares."""
