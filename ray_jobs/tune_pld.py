"""`python -m ray_jobs.tune_pld`: sweep PLD's K and alpha per modality -> denoised label quality.

Stage one runs once, as a Ray task with the trial resources: the pipeline's `generate_labels`
and `train` steps (child runs of this sweep's parent, reused when an earlier run has them), or
`--checkpoint han.pt`; its val (and, with --retrain-top, train) predictions are put into the
object store and every trial only denoises (Eq. 10-11) and scores: `pld/val/<modality>/...`,
`gain/<modality>/average` (vs the PLG labels) and the objective `pld/val/average`; the sweep's
parent run gets the PLG baseline `plg/val/average` (printed too) to read the winner against.
Default space: visual K 3..7 x alpha 10..50, audio K 5..7 x alpha 200..600 (225 trials).
`--retrain-top N` then retrains HAN on the denoised labels of the N best settings (a second
sweep with ASHA, val seg_type per epoch) and picks the winner by val seg_type.

    python -m ray_jobs.tune_pld --preset sim-small [--checkpoint han.pt] [--retrain-top 2]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ray_jobs import jobs, tune_train
from ray_jobs.space import Dimension
from ray_jobs.sweep import SweepSpec
from vaplan.cli import ArgumentParser, exits_on_user_error

OBJECTIVE = "pld/val/average"
DEFAULT_SPACE = {
    "pld.visual": Dimension("pld.visual", "fixed", (True,)),
    "pld.audio": Dimension("pld.audio", "fixed", (True,)),
    "pld.visual_k": Dimension("pld.visual_k", "grid", (3, 4, 5, 6, 7)),
    "pld.visual_alpha": Dimension("pld.visual_alpha", "grid", (10.0, 20.0, 30.0, 40.0, 50.0)),
    "pld.audio_k": Dimension("pld.audio_k", "grid", (5, 6, 7)),
    "pld.audio_alpha": Dimension("pld.audio_alpha", "grid", (200.0, 400.0, 600.0)),
}


@dataclass
class StageOne:
    """The stage-one model's cached outputs, shared by every PLD trial."""

    key: str  # checkpoint digest
    source: str  # MLflow run id of the train step, or the checkpoint path
    prob_val: np.ndarray  # (N, T, 2, C), index 0 audio, 1 visual
    labels_val: object  # PseudoLabels (PLG) of val
    gt_audio: np.ndarray
    gt_visual: np.ndarray
    plg_quality: dict
    prob_train: np.ndarray | None = None
    labels_train: object | None = None


def denoise(prob_seg: np.ndarray, labels, pld):
    """PLD of both modalities as configured (a modality that is off keeps its labels)."""
    from vaplan.method import denoise_pseudo_labels

    return denoise_pseudo_labels(prob_seg, labels, pld)


def pld_quality(stage: StageOne, pld) -> dict[str, float]:
    from vaplan.pseudo_labels import pseudo_label_report

    after = denoise(stage.prob_val, stage.labels_val, pld)
    report = pseudo_label_report(after, stage.gt_audio, stage.gt_visual)
    scores = {f"pld/val/{key}": value for key, value in report.items()}
    scores[OBJECTIVE] = (report["audio/average"] + report["visual/average"]) / 2
    for modality in ("audio", "visual"):
        before = getattr(stage.labels_val, f"seg_{modality}").astype(bool)
        flipped = before ^ getattr(after, f"seg_{modality}").astype(bool)
        scores[f"pld/val/{modality}/flipped_percent"] = 100 * flipped.sum() / max(before.sum(), 1)
        scores[f"gain/{modality}/average"] = (report[f"{modality}/average"]
                                              - stage.plg_quality[f"{modality}/average"])
    return scores


def pld_trial(config: dict, ctx, stage) -> None:
    from ray_jobs import common

    data = common.worker_data(stage)
    common.tracked_trial(ctx, config, lambda experiment, report: report(
        pld_quality(data, experiment.pld)))


def retrain_trial(config: dict, ctx, dataset, stage) -> None:
    """Retrain HAN on the train split's denoised labels of one PLD setting."""
    from ray_jobs import common

    data, one = common.worker_data(dataset), common.worker_data(stage)

    def body(experiment, report) -> None:
        labels = common.worker_memo(f"pld-train:{one.key}:{experiment.pld}",
                                    lambda: denoise(one.prob_train, one.labels_train,
                                                    experiment.pld))
        tune_train.train_with_reports(experiment.train, data.train, labels, data.val, report)

    common.tracked_trial(ctx, config, body)


SPEC = SweepSpec(job="tune_pld", sections=("pld.",), default_space=DEFAULT_SPACE,
                 metric=OBJECTIVE, trainable=pld_trial, uses_gpu=True)
RETRAIN_SPEC = SweepSpec(job="tune_pld_retrain", sections=("pld",), default_space={},
                         metric=tune_train.METRIC, objective=tune_train.OBJECTIVE,
                         trainable=retrain_trial, scheduler=tune_train.asha, uses_gpu=True)


def compute_stage_one(dataset, base: dict, uri: str, experiment_id: str, parent_run_id: str,
                      checkpoint: str | None, with_train: bool) -> StageOne:
    """Train (or load) the stage-one model, predict val (and train). Runs as a Ray task."""
    from ray_jobs import common
    from vaplan.config import ExperimentConfig, from_dict
    from vaplan.pseudo_labels import generate_pseudo_labels, pseudo_label_report
    from vaplan.train import load_checkpoint, predict

    data, experiment = common.worker_data(dataset), from_dict(ExperimentConfig, base)
    device = experiment.train.device
    if checkpoint:
        model, _, _ = load_checkpoint(checkpoint, device=device)
        key, source = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(), checkpoint
    else:
        model, key, source = _train_stage_one(data, experiment, uri, experiment_id,
                                              parent_run_id)
    labels = {name: generate_pseudo_labels(data.teachers[name], getattr(data, name).video_labels,
                                           experiment.plg) for name in ("train", "val")}
    val = data.val
    quality = pseudo_label_report(labels["val"], val.gt_audio, val.gt_visual)
    stage = StageOne(key, source, predict(model, val.features, device=device).prob_seg,
                     labels["val"], val.gt_audio, val.gt_visual, quality)
    if with_train:
        stage.prob_train = predict(model, data.train.features, device=device).prob_seg
        stage.labels_train = labels["train"]
    return stage


def _train_stage_one(data, experiment, uri: str, experiment_id: str, parent_run_id: str):
    """The pipeline's generate_labels + train steps (reused across runs with the same inputs)."""
    from pipelines import steps, tracking
    from pipelines.reuse import StepContext
    from vaplan.train import load_checkpoint

    tracking.use_tracking_uri(uri)
    with tempfile.TemporaryDirectory(prefix="vaplan-stage-one-") as tmp:
        ctx = StepContext(experiment_id, parent_run_id, Path(tmp), reuse=True, progress=False)
        labels = steps.generate_labels(ctx, data, experiment.plg)
        trained = steps.train(ctx, data, experiment.train, labels)
        model, _, _ = load_checkpoint(trained.path(steps.CHECKPOINT),
                                      device=experiment.train.device)
        return model, trained.digest(steps.CHECKPOINT), trained.run_id


def report_plg_baseline(plg_quality: dict[str, float], parent_run_id: str) -> None:
    """Log the PLG labels' val quality on the sweep's parent run (`plg/val/...`, and
    `plg/val/average` next to the objective) and print it: a PLD setting is only worth using
    above it (the pipeline's `pld.apply=auto` keeps PLG otherwise)."""
    from pipelines import tracking

    baseline = {f"plg/val/{key}": value for key, value in plg_quality.items()}
    baseline["plg/val/average"] = (plg_quality["audio/average"]
                                   + plg_quality["visual/average"]) / 2
    tracking.log_scores(baseline, run_id=parent_run_id)
    print(f"PLG baseline on val (what {OBJECTIVE} must beat): average "
          f"{baseline['plg/val/average']:.2f} (audio {plg_quality['audio/average']:.2f}, "
          f"visual {plg_quality['visual/average']:.2f})", flush=True)


def stage_one_data(opts, shared_dataset, checkpoint: str | None, with_train: bool):
    """data_fn of the PLD sweep: run stage one as a Ray task, share its outputs."""
    def make(base, uri, experiment_id, parent):
        import ray

        from ray_jobs import common
        from vaplan.config import to_dict

        task = ray.remote(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial)(
            compute_stage_one)
        stage = ray.get(task.remote(shared_dataset, to_dict(base), uri, experiment_id, parent,
                                    checkpoint, with_train))
        print(f"stage one: model {stage.key[:12]} from {stage.source}", flush=True)
        report_plg_baseline(stage.plg_quality, parent)
        return {"stage": common.share(stage, f"stage-one:{stage.key}:{with_train}")}
    return make


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ray_jobs.tune_pld",
                                     description=__doc__.split("\n")[0])
    jobs.add_args(parser, SPEC.job)
    tune_train.add_asha_args(parser)
    parser.add_argument("--checkpoint", default=None,
                        help="stage-one vaplan checkpoint (default: train it with the base config)")
    parser.add_argument("--retrain-top", type=int, default=0, metavar="N",
                        help="retrain HAN on the denoised labels of the N best settings")
    args = parser.parse_args(argv)
    if args.checkpoint and not Path(args.checkpoint).is_file():
        return jobs.refuse(FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist"))
    return jobs.run_pld(SPEC, RETRAIN_SPEC, args, stage_one_data)


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_pld import main as module_main

    sys.exit(module_main())
