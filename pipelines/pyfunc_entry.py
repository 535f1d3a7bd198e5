"""Models-from-code entry point of `vaplan-han`: MLflow executes this file (never import it).

`mlflow.pyfunc.log_model(python_model=<this file>)` copies it into the model and runs it on
load; `set_model` hands MLflow the model object, so nothing is pickled.
"""

import mlflow

from pipelines.pyfunc_model import VaplanHanModel

mlflow.models.set_model(VaplanHanModel())
