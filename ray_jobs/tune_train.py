"""`python -m ray_jobs.tune_train`: sweep the training objective -> val seg_type, with ASHA.

Each trial trains HAN on the PLG labels of the base config (`--set plg....` or the tune_plg
winner) and reports the official val scores every epoch (`val/seg_type`, `val/seg_a`, ...,
`train/loss`, `best/val/seg_type`, MLflow step = epoch); ASHA stops weak trials early.
Default space (Table 5's knobs): loss variant richness (L_S) / naive (L'_S) / video (no
richness term), lambda 0.25/0.5/1.0, the CR and SR terms on/off, lr log-uniform 1e-4..1e-3,
8 random samples. `--gpus-per-trial 0.25` puts four trials on one GPU; CPU-only works too
(`--cpus-per-trial` is also the trial's torch thread count).

    python -m ray_jobs.tune_train --preset sim-small --num-samples 8 --max-concurrent 2
    ray job submit --working-dir . -- python -m ray_jobs.tune_train --gpus-per-trial 0.25
"""

from __future__ import annotations

import argparse
import sys

from ray_jobs import jobs
from ray_jobs.space import Dimension
from ray_jobs.sweep import SweepSpec
from vaplan.cli import ArgumentParser, exits_on_user_error

METRIC, OBJECTIVE = "val/seg_type", "best/val/seg_type"
DEFAULT_SPACE = {
    "train.loss.variant": Dimension("train.loss.variant", "choice",
                                    ("richness", "naive", "video")),
    "train.loss.richness_weight": Dimension("train.loss.richness_weight", "choice",
                                            (0.25, 0.5, 1.0)),
    "train.loss.use_category_richness": Dimension("train.loss.use_category_richness",
                                                  "choice", (True, False)),
    "train.loss.use_segment_richness": Dimension("train.loss.use_segment_richness",
                                                 "choice", (True, False)),
    "train.lr": Dimension("train.lr", "loguniform", (1e-4, 1e-3)),
}


def asha(opts, base):
    """ASHA over epochs (None with --no-asha)."""
    if not opts.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    epochs = base.train.epochs
    return ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                         grace_period=max(1, min(opts.grace_period, epochs)),
                         reduction_factor=opts.reduction_factor)


def train_labels(data, plg):
    """PLG labels of the train split, computed once per worker and PLG setting."""
    from ray_jobs import common
    from vaplan.pseudo_labels import generate_pseudo_labels

    return common.worker_memo(f"plg-train:{data.digest}:{plg}", lambda: generate_pseudo_labels(
        data.teachers["train"], data.train.video_labels, plg))


def train_with_reports(cfg, train, labels, val, report) -> None:
    """train_han with every epoch's val scores reported (MLflow step = epoch, then Tune)."""
    from vaplan.train import build_targets, train_han

    best = float("-inf")

    def on_epoch(stats) -> None:
        nonlocal best
        best = max(best, stats.val.get(cfg.select_metric, float("-inf")))
        metrics = {f"val/{key}": value for key, value in stats.val.items()}
        metrics.update({"train/loss": stats.train_loss, "epoch/seconds": stats.seconds,
                        "epoch/lr": stats.lr,
                        f"best/val/{cfg.select_metric}": best})
        report(metrics, step=stats.epoch)

    train_han(cfg, train, build_targets(train, labels), val, on_epoch=on_epoch, progress=False)


def train_trial(config: dict, ctx, dataset) -> None:
    """One training setting on the base PLG labels."""
    from ray_jobs import common

    data = common.worker_data(dataset)

    def body(experiment, report) -> None:
        labels = train_labels(data, experiment.plg)
        train_with_reports(experiment.train, data.train, labels, data.val, report)

    common.tracked_trial(ctx, config, body)


SPEC = SweepSpec(job="tune_train", sections=("train.",), default_space=DEFAULT_SPACE,
                 metric=METRIC, objective=OBJECTIVE, trainable=train_trial,
                 default_num_samples=8, scheduler=asha, uses_gpu=True)


def add_asha_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a cut")
    parser.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA rung factor")
    parser.add_argument("--no-asha", dest="asha", action="store_false",
                        help="run every trial to the last epoch")


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ray_jobs.tune_train",
                                     description=__doc__.split("\n")[0])
    jobs.add_args(parser, SPEC.job)
    add_asha_args(parser)
    return jobs.run_single(SPEC, parser.parse_args(argv),
                           lambda plan, shared: lambda *_: {"dataset": shared})


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_train import main as module_main

    sys.exit(module_main())
