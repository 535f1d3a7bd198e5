"""The pipeline's steps: generate_labels -> train -> denoise -> retrain -> evaluate -> register.

Each step is a function of (StepContext, Dataset, its typed config, upstream StepResults) that
runs as one child run through `pipelines.reuse.run_step`: it writes its files into the step's
output folder (logged as the run's artifacts) and logs metrics; an unchanged step is reused.
Files: labels/plg.parquet, labels/pld.parquet, checkpoint/han.pt, scores.json,
tables/per_class_val.csv, config.json, registration.json and plots/*.png.
"""

from pipelines.steps.common import CHECKPOINT, PLD_FILE, PLG_FILE, log_label_input
from pipelines.steps.evaluation import evaluate, register
from pipelines.steps.labels import denoise, generate_labels
from pipelines.steps.training import retrain, train

__all__ = ["CHECKPOINT", "PLD_FILE", "PLG_FILE", "log_label_input",
           "generate_labels", "train", "denoise", "retrain", "evaluate", "register"]
