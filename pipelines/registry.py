"""The `vaplan-han` registered model: logging the pyfunc, aliases and the promotion gate.

MLflow 3 deprecates registry stages in favour of aliases (docs/pipelines.md maps them):
every new version gets `candidate`; `champion` moves to it only when its score on
`promote_metric` (higher is better) strictly beats the current champion's, so a better
champion is never demoted. The decision and both scores are version tags.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion

import vaplan
from pipelines import tracking
from pipelines.pyfunc_model import model_signature

CANDIDATE, CHAMPION = "candidate", "champion"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
TAG = "vaplan.promotion."
MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate did for one new version."""

    model_name: str
    version: str
    metric: str
    candidate_score: float
    champion_version: str | None  # the champion before the decision
    champion_score: float | None
    promoted: bool
    reason: str

    def tags(self) -> dict[str, str]:
        """Version tags that record the decision and both scores."""
        return {f"{TAG}decision": "promoted" if self.promoted else "kept",
                f"{TAG}metric": self.metric,
                f"{TAG}candidate_score": f"{self.candidate_score:.6f}",
                f"{TAG}champion_version": self.champion_version or "none",
                f"{TAG}champion_score": ("none" if self.champion_score is None
                                         else f"{self.champion_score:.6f}"),
                f"{TAG}reason": self.reason}

    def to_dict(self) -> dict:
        return asdict(self)


def requirements() -> list[str]:
    """pip requirements of the model (explicit: inferring them loads the model in a subprocess)."""
    import pandas
    import pyarrow
    import torch

    plain = lambda v: v.split("+")[0]  # noqa: E731  (drop local tags such as +cpu)
    return [f"vaplan=={vaplan.__version__}", f"mlflow=={mlflow.__version__}",
            f"torch=={plain(torch.__version__)}", f"numpy=={np.__version__}",
            f"pandas=={pandas.__version__}", f"pyarrow=={pyarrow.__version__}"]


def log_han_model(model_name: str, checkpoint: Path, labels: Path, config_json: Path,
                  scores: Mapping[str, float], metadata: Mapping[str, str]):
    """Log the pyfunc into the active run, register it as a new version; returns ModelInfo."""
    with warnings.catch_warnings():  # "no input example": inputs are free-form on purpose
        warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
        info = tracking.retry_locked(
            mlflow.pyfunc.log_model, name="model", python_model=str(ENTRY),
            artifacts={"checkpoint": str(checkpoint), "labels": str(labels),
                       "config": str(config_json)},
            pip_requirements=requirements(), registered_model_name=model_name,
            signature=model_signature(), metadata=dict(metadata))
    finite = {k: float(v) for k, v in scores.items() if math.isfinite(float(v))}
    tracking.retry_locked(mlflow.log_metrics, finite, model_id=info.model_id)
    return info


def version_score(name: str, version: str, metric: str) -> float | None:
    """A version's `metric`: its `vaplan.score.<metric>` tag, else its run's metric."""
    client = tracking.client()
    mv = tracking.retry_locked(client.get_model_version, name, version)
    if f"vaplan.score.{metric}" in mv.tags:
        return float(mv.tags[f"vaplan.score.{metric}"])
    if mv.run_id:
        metrics = tracking.retry_locked(client.get_run, mv.run_id).data.metrics
        if metric in metrics:
            return float(metrics[metric])
    return None


def current_alias(name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when no version has it."""
    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as err:
        if tracking.is_locked_error(err):
            return tracking.retry_locked(tracking.client().get_model_version_by_alias,
                                         name, alias)
        return None


def apply_promotion_gate(name: str, version: str | int, score: float,
                         metric: str = "val/seg_type") -> PromotionDecision:
    """Give `version` the candidate alias, and champion when `score` beats the champion's."""
    client, version = tracking.client(), str(version)
    tracking.retry_locked(client.set_model_version_tag, name, version,
                          f"vaplan.score.{metric}", f"{score:.6f}")
    tracking.retry_locked(client.set_registered_model_alias, name, CANDIDATE, version)
    champion = current_alias(name, CHAMPION)
    champion_score = None if champion is None else version_score(name, str(champion.version),
                                                                 metric)
    decision = _decide(name, version, metric, score, champion, champion_score)
    if decision.promoted:
        tracking.retry_locked(client.set_registered_model_alias, name, CHAMPION, version)
    for key, value in decision.tags().items():
        tracking.retry_locked(client.set_model_version_tag, name, version, key, value)
    return decision


def _decide(name: str, version: str, metric: str, score: float, champion: ModelVersion | None,
            champion_score: float | None) -> PromotionDecision:
    held = None if champion is None else str(champion.version)  # int (SQL) or str (REST)
    if champion is None:
        promoted, reason = True, "no champion yet"
    elif held == version:
        promoted, reason = True, "already champion"
    elif champion_score is None:
        promoted, reason = True, f"champion v{held} has no {metric}"
    elif score > champion_score:
        promoted, reason = True, f"{score:.3f} > champion v{held} {champion_score:.3f}"
    else:
        promoted, reason = False, (f"{score:.3f} does not beat champion v{held} "
                                   f"{champion_score:.3f}")
    return PromotionDecision(name, version, metric, float(score),
                             held,
                             champion_score, promoted, reason)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name@alias` or `models:/name/3` -> (name, alias, version)."""
    match = MODEL_URI.match(uri)
    if match is None:
        raise ValueError(f"model URI {uri!r} must look like models:/<name>@<alias> or "
                         f"models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def resolve_version(name: str, alias: str | None = CHAMPION,
                    version: int | str | None = None) -> ModelVersion:
    """The registered version named by a number (wins) or an alias; errors say what exists."""
    client = tracking.client()
    if version is not None:
        return tracking.retry_locked(client.get_model_version, name, str(version))
    if alias is None:
        raise ValueError("give a version or an alias")
    found = current_alias(name, alias)
    if found is None:
        model = tracking.retry_locked(client.get_registered_model, name)
        raise LookupError(f"model {name!r} has no alias {alias!r}; aliases: "
                          f"{dict(model.aliases) or 'none'}")
    return found
