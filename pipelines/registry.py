"""The `vaplan-han` registered model: logging the pyfunc, aliases, the promotion gate (its pure
rule `decide` is `vaplan.gate`; aliases and the gate: docs/pipelines.md "Registry")."""

from __future__ import annotations

import math
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Mapping

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion

import vaplan
from pipelines import tracking
from pipelines.pyfunc_model import model_signature
from vaplan.config import RegistryConfig
from vaplan.data.types import SplitData
from vaplan.errors import UserError
from vaplan.gate import (PromotionDecision, decide,  # noqa: F401 (decide: tests, callers)
                         feature_mismatch, video_scores)
from vaplan.io import read_json, write_json
from vaplan.report import flat_scores
from vaplan.serving import (INTEGRITY, INTEGRITY_FILE, integrity_record, verify_digests,
                            verify_integrity_file)

CANDIDATE, CHAMPION = "candidate", "champion"
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
DIGEST_TAG = "vaplan.sha256."  # + "checkpoint" / "labels": the registry's own record
DIGESTED = ("checkpoint", "labels")
SCORE_TAG = "vaplan.score."  # + the promote metric: the gate's score of the version
DATASET_TAG = "vaplan.dataset_digest"
BACKBONE_TAG = "vaplan.backbone"  # the version's train.model.name (docs/backbones.md)
RECORD = "registration.json"  # in the version's run: everything that is not one of its tags


class IncomparableChampion(Exception):
    """The champion cannot predict the candidate's val videos (message says why)."""


def requirements() -> list[str]:
    """pip requirements of the model (explicit: inferring them loads the model in a subprocess)."""
    import pandas
    import pyarrow
    import torch

    plain = lambda v: v.split("+")[0]  # noqa: E731  (drop local tags such as +cpu)
    return [f"vaplan=={vaplan.__version__}", f"mlflow=={mlflow.__version__}",
            f"torch=={plain(torch.__version__)}", f"numpy=={np.__version__}",
            f"pandas=={pandas.__version__}", f"pyarrow=={pyarrow.__version__}"]


@tracking.promoter_credentials()  # registers: the promoter account (docs/deploy.md)
def log_han_model(model_name: str, checkpoint: Path, labels: Path, config_json: Path,
                  scores: Mapping[str, float], metadata: Mapping[str, str],
                  entry: Path = ENTRY, signature=None):
    """Log the pyfunc into the active run, register it as a new version; returns ModelInfo.
    Runs as the promoter account where one is configured (`tracking.promoter_credentials`).
    `entry` / `signature`: another models-from-code file and its signature (the AVE models,
    pipelines/ave.py); default the vaplan-han pyfunc.

    The sha256 of each bundled file goes into the model as integrity.json and, for the
    checkpoint and labels, onto the version as tags `vaplan.sha256.<key>` (see verify_version).
    """
    files = {"checkpoint": str(checkpoint), "labels": str(labels), "config": str(config_json)}
    record = integrity_record(files)
    with tempfile.TemporaryDirectory(prefix="vaplan-integrity-") as tmp, \
            warnings.catch_warnings():  # "no input example": inputs are free-form on purpose
        integrity = write_json(Path(tmp) / INTEGRITY_FILE, record)
        warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(entry), artifacts={**files, INTEGRITY: str(integrity)},
            pip_requirements=requirements(), registered_model_name=model_name,
            signature=signature or model_signature(), metadata=dict(metadata))
    client, version = tracking.client(), str(info.registered_model_version)
    for key in DIGESTED:
        client.set_model_version_tag(model_name, version, f"{DIGEST_TAG}{key}",
                                     record["files"][key]["sha256"])
    finite = {k: float(v) for k, v in scores.items() if math.isfinite(float(v))}
    mlflow.log_metrics(finite, model_id=info.model_id)
    return info


def tag_version(name: str, version: str, dataset_digest: str, backbone: str) -> None:
    """The version's dataset and backbone tags (as the promoter: a registry write)."""
    with tracking.promoter_credentials():  # docs/deploy.md, "Accounts"
        for tag, value in ((DATASET_TAG, dataset_digest), (BACKBONE_TAG, backbone)):
            tracking.client().set_model_version_tag(name, version, tag, value)


def verify_version(mv: ModelVersion, files: Mapping[str, Path]) -> None:
    """Check a downloaded version's files (artifact key -> local path) against its
    `vaplan.sha256.*` tags and its bundled integrity.json; IntegrityError on a mismatch.

    A version registered before digests were recorded gets one warning on stderr.
    """
    subject = f"model {mv.name} v{mv.version}"
    tags = {key: mv.tags[f"{DIGEST_TAG}{key}"] for key in DIGESTED
            if f"{DIGEST_TAG}{key}" in mv.tags}
    verify_digests(files, tags, subject, {key: f"version tag {DIGEST_TAG}{key}" for key in tags})
    bundled = verify_integrity_file(files, subject)
    if not tags:
        checked = (f"checked against its {INTEGRITY_FILE} only" if bundled else "not verified")
        print(f"warning: {subject} has no {DIGEST_TAG}* tags (registered before sha256 digests "
              f"were recorded); its files are {checked}", file=sys.stderr)


def version_score(name: str, version: str, metric: str) -> float | None:
    """A version's `metric`: its `vaplan.score.<metric>` tag, else its run's metric."""
    client = tracking.client()
    mv = client.get_model_version(name, version)
    if f"{SCORE_TAG}{metric}" in mv.tags:
        return float(mv.tags[f"{SCORE_TAG}{metric}"])
    if mv.run_id:
        metrics = client.get_run(mv.run_id).data.metrics
        if metric in metrics:
            return float(metrics[metric])
    return None


def version_record(mv: ModelVersion) -> dict:
    """What the pipeline recorded about a version beyond its few tags: `registration.json` of
    the version's run (scores {"val": {...}, "test": {...}}, label quality, the label choice,
    the gate's decision, dataset). {} for a version made another way (by hand, or before the
    record held scores)."""
    if not mv.run_id:
        return {}
    try:
        record = mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/{RECORD}")
    except Exception:  # no such artifact (a version registered by hand from another run)
        return {}
    return record if str(record.get("version")) == str(mv.version) else {}


def current_alias(name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when no version has it."""
    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


ChampionScores = Callable[[str], np.ndarray]  # champion version -> per-video scores (N,)


@tracking.promoter_credentials()  # moves aliases: the promoter account (docs/deploy.md)
def apply_promotion_gate(name: str, version: str | int, candidate: np.ndarray,
                         metric: str = "val/seg_type", cfg: RegistryConfig = RegistryConfig(),
                         champion_scores: ChampionScores | None = None,
                         notes: str = "") -> PromotionDecision:
    """Give `version` the candidate alias, and champion when it beats the champion beyond noise.

    candidate: the new version's per-video `metric` scores on val, (N,) points.
    champion_scores(champion_version) returns the champion's scores on the SAME videos (or
    raises IncomparableChampion); the decision is `decide`. Records tags and a description
    (markdown; `notes` are appended, e.g. which labels the version was trained on).
    """
    client, version = tracking.client(), str(version)
    candidate = np.asarray(candidate, dtype=np.float64)
    client.set_model_version_tag(name, version, f"{SCORE_TAG}{metric}",
                                 f"{float(np.mean(candidate)):.4f}")
    client.set_registered_model_alias(name, CANDIDATE, version)
    champion = current_alias(name, CHAMPION)
    held = None if champion is None else str(champion.version)  # int (SQL) or str (REST)
    scores, unavailable = None, None
    if held is not None and held != version and np.isfinite(candidate).all():
        try:
            if champion_scores is None:
                raise IncomparableChampion("no way to score the champion was given")
            scores = np.asarray(champion_scores(held), dtype=np.float64)
        except IncomparableChampion as err:
            unavailable = str(err)
    decision = decide(name, version, metric, candidate, held, scores, cfg, unavailable)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, version, key, value)
    description = decision.description() + (f"\n\n{notes}" if notes else "")
    client.update_model_version(name, version, description=description)
    return decision


def open_version(tracking_uri: str | None, name: str, alias: str | None = CHAMPION,
                 version: int | str | None = None) -> ModelVersion:
    """`resolve_version` in an EXISTING store (never creates one): the read-only commands'
    preamble; StoreNotFoundError naming what exists (`tracking.open_existing_store`)."""
    tracking.open_existing_store(tracking_uri, name, alias, version)
    return resolve_version(name, alias=alias, version=version)


def still_registered(out: Path) -> bool:
    """A register step's `check_reuse`: reuse `out/registration.json` only while its version
    still exists in the registry."""
    record = read_json(out / RECORD)
    try:
        resolve_version(record["model_name"], version=record["version"])
    except Exception:
        return False
    return True


def resolve_version(name: str, alias: str | None = CHAMPION,
                    version: int | str | None = None) -> ModelVersion:
    """The registered version named by a number (wins) or an alias; errors say what exists."""
    client = tracking.client()
    if version is not None:
        return client.get_model_version(name, str(version))
    if alias is None:
        raise ValueError("give a version or an alias")
    found = current_alias(name, alias)
    if found is None:
        model = client.get_registered_model(name)
        raise LookupError(f"model {name!r} has no alias {alias!r}; aliases: "
                          f"{dict(model.aliases) or 'none'}")
    return found


def champion_scorer(model_name: str, split, key: str,
                    load: Callable[[Path], Callable] | None = None) -> ChampionScores:
    """champion version -> its per-video `key` scores on `split` (the candidate's val videos).

    Pulls the version's checkpoint from the registry (digests verified); a checkpoint that
    cannot be loaded or fed these features raises IncomparableChampion. `load`: another kind
    of model (AVE, pipelines/ave.py): load(checkpoint path) -> score(split, key) -> (N,).
    """
    from pipelines import commands  # commands imports this module

    def score(version: str):  # -> (N,) per-video scores
        with tempfile.TemporaryDirectory(prefix="vaplan-champion-") as tmp:
            try:
                folder = commands.pull(model_name, tmp, version=version,
                                       tracking_uri=mlflow.get_tracking_uri())
                scores = (load or _han_scores)(folder / "checkpoint.pt")
            except (UserError, LookupError, OSError, ValueError, RuntimeError) as err:
                raise IncomparableChampion(
                    f"its checkpoint could not be loaded ({err})") from err
        return scores(split, key)
    return score


def _han_scores(checkpoint: Path) -> Callable[[SplitData, str], np.ndarray]:
    """champion_scorer's default `load`: a HAN checkpoint, refused when it cannot take the
    split's features (IncomparableChampion naming what it expects)."""
    from vaplan.train import load_checkpoint

    han, cfg, _ = load_checkpoint(checkpoint)

    def scores(split: SplitData, key: str) -> np.ndarray:
        mismatch = feature_mismatch(cfg.model, split.features)
        if mismatch:
            raise IncomparableChampion(
                f"its checkpoint cannot take these features: it expects {mismatch}")
        return video_scores(han, split, key)
    return scores


def register_version(out: Path, model_name: str, files: Mapping[str, Path],
                     scores: Mapping[str, Mapping[str, float]], candidate: np.ndarray,
                     champion_scores: ChampionScores, *, promote_metric: str,
                     cfg: RegistryConfig, backbone: str, dataset, run_id: str, notes: str,
                     record: Mapping | None = None, **model) -> dict:
    """One registration for every kind of model (the register steps, register-checkpoint):
    log `files` (checkpoint, labels it trained on, config) as a new `model_name` version
    (`**model`: log_han_model's entry/signature), tag it with `dataset`'s digest and the
    backbone, gate it on `candidate` (its (N,) per-video `promote_metric` scores on val) and
    write `out/registration.json` (`scores` {"val": .., "test": ..}, the decision, the
    description with `notes`, plus `record`); returns that record. run_id: the owning run."""
    info = log_han_model(model_name, files["checkpoint"], files["labels"], files["config"],
                         flat_scores(scores), {"dataset_digest": dataset.digest,
                                               "parent_run_id": run_id}, **model)
    version = str(info.registered_model_version)
    tag_version(model_name, version, dataset.digest, backbone)
    decision = apply_promotion_gate(model_name, version, candidate, promote_metric, cfg,
                                    champion_scores, notes=notes)
    record = {"model_name": model_name, "version": version,
              "model_uri": f"models:/{model_name}/{version}", "logged_model_uri": info.model_uri,
              "decision": decision.to_dict(), "scores": dict(scores), "parent_run_id": run_id,
              "dataset": {"digest": dataset.digest, "description": dataset.description},
              "description": decision.description() + "\n\n" + notes, **dict(record or {})}
    write_json(out / RECORD, record)
    return record


def decision_metrics(record: Mapping) -> dict[str, float]:
    """`registry/*` metrics of a registration record (version, promoted, improvement +- CI)."""
    decision = record["decision"]
    return {"registry/version": int(record["version"]),
            "registry/promoted": int(decision["promoted"]),
            "registry/improvement": decision["improvement"],
            "registry/improvement_low": decision["low"],
            "registry/improvement_high": decision["high"]}
