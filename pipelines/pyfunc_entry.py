"""Models-from-code entry point of `vaplan-han`: MLflow executes this file (never import it)."""

import mlflow

from pipelines.pyfunc_model import VaplanHanModel

mlflow.models.set_model(VaplanHanModel())
