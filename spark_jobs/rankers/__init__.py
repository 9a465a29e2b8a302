"""Learning-to-rank models trained distributed on Spark, one module per library.

- `xgboost_ranker.train_xgboost`: `xgboost.spark.SparkXGBRanker` (rank:ndcg) on `num_workers` Spark tasks.
- `lightgbm_ranker.train_lightgbm`: LightGBM lambdarank, data-parallel over LightGBM's own socket network
  inside a Spark barrier stage (one rank per task, each holding whole query groups).
- `common`: what both share — query ids, the validation split, native prediction, feature importance,
  choosing how many trees the compressed model keeps.

Both return a `common.TrainedRanker` (the native booster plus what was done); `spark_jobs.model_registry`
exports it (ONNX, compressed ONNX, native file) and registers it in MLflow.
"""
