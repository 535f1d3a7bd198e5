"""The promotion gate without MLflow: what it compares (per-video val scores of a model under
the official protocol; whether a champion's checkpoint can take the candidate's features at
all) and its rule (`decide`, a paired bootstrap over the same videos -> `PromotionDecision`).

The pipeline's register step pulls the champion, scores both and records the decision
(pipelines/registry.py; docs/pipelines.md, "Promotion gate").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vaplan.categories import CLASSES
from vaplan.config import ModelConfig, RegistryConfig
from vaplan.data.types import Features, SplitData
from vaplan.metrics import SCORE_KEYS, avvp_video_scores, filter_by_video
from vaplan.stats import paired_bootstrap

TAG = "vaplan.promotion."  # + decision / improvement / interval: a version's gate tags


def predicted_events(prob_seg: np.ndarray, prob_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Official protocol: (N,T,2,C) segment and (N,C) video probabilities -> (N,T,C) audio
    and visual events."""
    return (filter_by_video(prob_seg[:, :, 0], prob_video),
            filter_by_video(prob_seg[:, :, 1], prob_video))


def gate_score_key(promote_metric: str) -> str:
    """`val/<score>` -> `<score>`: the gate compares per-video val scores (SCORE_KEYS)."""
    split, _, key = promote_metric.partition("/")
    if split != "val" or key not in SCORE_KEYS:
        raise ValueError(f"promote_metric {promote_metric!r} must be val/<score> with <score> "
                         f"one of {', '.join(SCORE_KEYS)} (the gate resamples val videos)")
    return key


def video_scores(model, split: SplitData, key: str) -> np.ndarray:
    """Per-video `key` score (percent) of `model` (a HAN, or its Predictions on `split`) on
    `split`, official protocol: (N,)."""
    from vaplan.train import Predictions, predict  # torch only when scoring

    preds = model if isinstance(model, Predictions) else predict(model, split.features)
    pred_audio, pred_visual = predicted_events(preds.prob_seg, preds.prob_video)
    return avvp_video_scores(pred_audio, pred_visual, split.gt_audio, split.gt_visual)[key]


def feature_mismatch(model: ModelConfig, features: Features) -> str | None:
    """Why a HAN(model) cannot take `features` (None when it can)."""
    got = {"audio_dim": features.audio.shape[-1], "visual_dim": features.visual.shape[-1],
           "visual_3d_dim": 0 if features.visual_3d is None else features.visual_3d.shape[-1]}
    wanted = {"audio_dim": model.audio_dim, "visual_dim": model.visual_dim,
              "visual_3d_dim": model.visual_3d_dim}
    if model.visual_3d_dim == 0:  # a 2D-only HAN ignores 3D features
        del got["visual_3d_dim"], wanted["visual_3d_dim"]
    diff = [f"{key} {wanted[key]} (features have {got[key]})" for key in wanted
            if wanted[key] != got[key]]
    if model.num_classes != len(CLASSES):
        diff.append(f"num_classes {model.num_classes} (expected {len(CLASSES)})")
    return "; ".join(diff) or None


@dataclass(frozen=True)
class PromotionDecision:
    """What the gate did for one new version.

    Scores are means over the candidate's val videos (points); `improvement` = candidate -
    champion on those videos with its paired-bootstrap interval [low, high] at `confidence`
    (None when there was nothing to compare).
    """

    model_name: str
    version: str
    metric: str
    candidate_score: float
    champion_version: str | None  # the champion before the decision
    champion_score: float | None
    promoted: bool
    reason: str
    improvement: float | None = None
    low: float | None = None
    high: float | None = None
    confidence: float = 0.95
    min_improvement: float = 0.0
    samples: int = 0
    videos: int = 0

    def interval(self) -> str:
        """'[-0.21, +0.40] at 95%', or 'none'."""
        if self.low is None or self.high is None:
            return "none"
        return f"[{self.low:+.3f}, {self.high:+.3f}] at {100 * self.confidence:g}%"

    def tags(self) -> dict[str, str]:
        """Three version tags: the decision, the improvement and its interval (the scores and
        the champion are in the description and registration.json)."""
        return {f"{TAG}decision": "promoted" if self.promoted else "kept",
                f"{TAG}improvement": ("none" if self.improvement is None
                                      else f"{self.improvement:+.3f}"),
                f"{TAG}interval": self.interval()}

    def description(self) -> str:
        """The version description (markdown): scores, improvement +- interval, the reason."""
        verdict = "promoted to `champion`" if self.promoted else "kept as `candidate`"
        champion = ("none" if self.champion_version is None else
                    f"v{self.champion_version}: "
                    + ("not scored" if self.champion_score is None
                       else f"{self.champion_score:.3f}"))
        lines = [f"**Promotion gate: {verdict}**", "",
                 f"| `{self.metric}` on {self.videos} val videos | value |", "| --- | --- |",
                 f"| candidate v{self.version} | {self.candidate_score:.3f} |",
                 f"| champion before | {champion} |"]
        if self.improvement is not None:
            lines.append(f"| improvement (candidate - champion) | {self.improvement:+.3f} "
                         f"{self.interval()} |")
        lines += ["", f"Rule: promote when the lower bound of the improvement (paired bootstrap "
                      f"over val videos, {self.samples} resamples) exceeds min_improvement = "
                      f"{self.min_improvement:g}.", "", f"Reason: {self.reason}"]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(name: str, version: str, metric: str, candidate: np.ndarray,
           champion_version: str | None, champion: np.ndarray | None,
           cfg: RegistryConfig = RegistryConfig(),
           unavailable: str | None = None) -> PromotionDecision:
    """The gate's rule on per-video scores of the same videos (pure: no MLflow calls).

    Non-finite candidate scores never promote; no champion -> promote; otherwise promote only
    when the lower bound of the paired-bootstrap improvement at cfg.confidence exceeds
    cfg.min_improvement. `unavailable` says why the champion could not be scored (kept).
    """
    candidate = np.asarray(candidate, dtype=np.float64)  # (N,)
    held, score = champion_version, float(np.mean(candidate))
    base = dict(model_name=name, version=str(version), metric=metric, candidate_score=score,
                champion_version=held, confidence=cfg.confidence,
                min_improvement=cfg.min_improvement, samples=cfg.bootstrap_samples,
                videos=int(candidate.size))
    bad = int((~np.isfinite(candidate)).sum())
    if bad:
        return PromotionDecision(**base, champion_score=None, promoted=False,
                                 reason=f"candidate {metric} is not finite on {bad} of "
                                        f"{candidate.size} val videos: never promoted")
    if held is None:
        return PromotionDecision(**base, champion_score=None, promoted=True,
                                 reason="no champion yet")
    if held == str(version):
        return PromotionDecision(**base, champion_score=None, promoted=True,
                                 reason="already champion")
    if unavailable is not None or champion is None:
        why = unavailable or "its scores are missing"
        return PromotionDecision(**base, champion_score=None, promoted=False,
                                 reason=f"champion v{held} cannot be compared on the "
                                        f"candidate's val videos: {why}; kept as candidate "
                                        f"(move the alias by hand if that is intended)")
    champion = np.asarray(champion, dtype=np.float64)
    if not np.isfinite(champion).all():
        return PromotionDecision(**base, champion_score=float(np.mean(champion)), promoted=False,
                                 reason=f"champion v{held} has non-finite {metric} scores: "
                                        f"no comparison; kept as candidate")
    test = paired_bootstrap(candidate, champion, samples=cfg.bootstrap_samples,
                            confidence=cfg.confidence, seed=cfg.seed)
    promoted = test.exceeds(cfg.min_improvement)
    verdict = (f"lower bound {test.low:+.3f} > min_improvement {cfg.min_improvement:g}"
               if promoted else
               f"lower bound {test.low:+.3f} <= min_improvement {cfg.min_improvement:g}: "
               f"not better beyond the noise")
    reason = (f"{metric} {score:.3f} vs champion v{held} {test.reference_mean:.3f}: "
              f"improvement {test.describe()} over {test.videos} val videos; {verdict}")
    return PromotionDecision(**base, champion_score=test.reference_mean, promoted=promoted,
                             reason=reason, improvement=test.improvement, low=test.low,
                             high=test.high)
