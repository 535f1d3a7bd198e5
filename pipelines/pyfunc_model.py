"""The `vaplan-han` MLflow pyfunc: checkpoint + labels + config + integrity.json, built from
`pipelines/pyfunc_entry.py` (nothing pickled); its frames: `vaplan.serving` (docs/pipelines.md)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel

from vaplan.serving import (INTEGRITY_FILE, UnverifiedModelWarning, features_from_input,
                            predictions_frame, verify_integrity_file)


def model_signature():
    """Outputs and params of `predict` (inputs stay free: feature widths depend on the config)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    names = [ColSpec(Array("string"), key) for key in ("audio_events", "visual_events",
                                                        "av_events")]
    probs = [ColSpec(Array("float"), key) for key in ("prob_audio", "prob_visual", "prob_video")]
    outputs = Schema([ColSpec("string", "video_id"), ColSpec("long", "segment"), *names, *probs])
    params = ParamSchema([ParamSpec("batch_size", "long", 256)])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


class VaplanHanModel(PythonModel):
    """HAN trained on VAPLAN pseudo labels, served through MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        from vaplan.config import ExperimentConfig, from_dict
        from vaplan.train import load_checkpoint

        device = (context.model_config or {}).get("device", "cpu")
        self.device = device
        model_dir = Path(context.artifacts["checkpoint"]).parent.parent
        if not verify_integrity_file(context.artifacts, f"model {model_dir}"):
            warnings.warn(f"model {model_dir} has no {INTEGRITY_FILE} (logged before sha256 "
                          f"digests were recorded): its checkpoint and labels are not verified",
                          UnverifiedModelWarning, stacklevel=2)
        self.model, self.train_config, self.extra = load_checkpoint(
            context.artifacts["checkpoint"], device=device)
        with open(context.artifacts["config"]) as handle:
            self.record = json.load(handle)
        self.experiment_config = from_dict(ExperimentConfig, self.record["experiment"])
        self.labels_path = context.artifacts["labels"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """Per-segment audio, visual and audio-visual events and probabilities per video.

        `model_input` is a one-row-per-video DataFrame or a dict of arrays (the DataFrame hint
        only tells MLflow not to infer a schema: feature widths depend on the config).
        """
        from vaplan.train import predict

        video_ids, features = features_from_input(model_input)
        batch = int((params or {}).get("batch_size", 256))
        preds = predict(self.model, features, device=self.device, batch_size=batch)
        return predictions_frame(video_ids, preds.prob_seg, preds.prob_video)
