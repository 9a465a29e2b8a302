"""The MLflow pyfunc of a lambdarec ranker (MLflow "models from code").

Not imported by lambdarec: `spark_jobs.model_registry` logs this file's path as the model's code, and
MLflow copies it into every model version and runs it when someone calls
`mlflow.pyfunc.load_model("models:/<name>@champion")`. It needs only numpy, pandas and onnxruntime
(no Spark, no training code): input = a DataFrame with the columns of `ranker_meta.json["features"]`
(NaN = missing), output = one score per row, higher is better.
"""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


class RankerPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime

        with open(context.artifacts["ranker_meta"]) as fh:
            self.meta = json.load(fh)
        with open(context.artifacts["model"], "rb") as fh:
            self.session = onnxruntime.InferenceSession(fh.read(), providers=["CPUExecutionProvider"])

    def predict(self, context, model_input, params=None):
        features = np.asarray(model_input[self.meta["features"]], dtype=np.float32)
        scores = self.session.run([self.meta["onnx_output"]], {self.meta["onnx_input"]: features})[0]
        return scores.ravel().astype(np.float64)


set_model(RankerPyfunc())
