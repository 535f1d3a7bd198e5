"""The pipeline's steps, each one child run through `pipelines.reuse.run_step`:
generate_labels -> train -> denoise -> retrain -> evaluate -> register (docs/pipelines.md;
labels.source=ma makes MA labels with `ma_labels` instead of `denoise`)."""

from pipelines.steps.common import CHECKPOINT, PLD_FILE, PLG_FILE, log_label_input
from pipelines.steps.evaluation import evaluate, register
from pipelines.steps.labels import denoise, generate_labels, ma_labels
from pipelines.steps.training import retrain, train

__all__ = ["CHECKPOINT", "PLD_FILE", "PLG_FILE", "log_label_input",
           "generate_labels", "train", "denoise", "ma_labels", "retrain", "evaluate", "register"]
