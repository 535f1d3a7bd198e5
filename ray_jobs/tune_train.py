"""Sweep the training objective -> val seg_type per epoch, with ASHA.

A trial trains HAN (`vaplan.method.fit`) on the base config's PLG labels (made once by the
driver) and reports the val scores every epoch (`val/seg_type`, `train/loss`,
`best/val/seg_type`, ...; step = epoch); ASHA stops weak trials. Default (Table 5's knobs):
loss variant richness/naive/video, lambda 0.25/0.5/1, CR and SR on/off, lr log-uniform
1e-4..1e-3, 8 samples. `--cpus-per-trial` is also the torch thread count.

examples:
  python -m ray_jobs.tune_train --preset sim-small --num-samples 8 --max-concurrent 2
  python -m ray_jobs.tune_train --preset sim-tiny --space train.lr=loguniform:1e-4,1e-3 \
      --space train.loss.variant=richness,naive --num-samples 2
  ray job submit --working-dir . -- python -m ray_jobs.tune_train --gpus-per-trial 0.25
"""

from __future__ import annotations

import sys

from ray_jobs import sweep
from vaplan.cli import exits_on_user_error

METRIC, OBJECTIVE = "val/seg_type", "best/val/seg_type"
DEFAULT_SPACE = {"train.loss.variant": {"choice": ["richness", "naive", "video"]},
                 "train.loss.richness_weight": {"choice": [0.25, 0.5, 1.0]},
                 "train.loss.use_category_richness": {"choice": [True, False]},
                 "train.loss.use_segment_richness": {"choice": [True, False]},
                 "train.lr": {"loguniform": [1e-4, 1e-3]}}


def asha(opts, base):
    """ASHA over epochs (None with --no-asha)."""
    from ray.tune.schedulers import ASHAScheduler

    epochs = base.train.epochs
    return ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                         grace_period=max(1, min(opts.grace_period, epochs)),
                         reduction_factor=opts.reduction_factor) if opts.asha else None


def add_asha_args(parser) -> None:
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a cut")
    parser.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA rung factor")
    parser.add_argument("--no-asha", dest="asha", action="store_false",
                        help="run every trial to the last epoch")


def fit_and_report(cfg, dataset, labels) -> None:
    """`vaplan.method.fit` with every epoch's val scores reported to Tune."""
    from ray import tune

    from vaplan.method import fit

    best = float("-inf")

    def on_epoch(stats) -> None:
        nonlocal best
        best = max(best, stats.val.get(cfg.select_metric, float("-inf")))
        tune.report({**{f"val/{key}": value for key, value in stats.val.items()},
                     "train/loss": stats.train_loss, "epoch/seconds": stats.seconds,
                     "epoch/lr": stats.lr, f"best/val/{cfg.select_metric}": best})

    fit(cfg, dataset, labels, on_epoch=on_epoch, progress=False)


def train_data(state, dataset) -> dict:
    """The dataset and the base config's PLG labels of train, made once by the driver."""
    from vaplan.method import make_pseudo_labels

    return {"dataset": dataset,
            "labels": make_pseudo_labels(dataset, "train", state.experiment.plg)}


SPEC = sweep.SweepSpec(job="tune_train", sections=("train.",), default_space=DEFAULT_SPACE,
                       metric=METRIC, objective=OBJECTIVE, num_samples=8, scheduler=asha,
                       trains=True, body=lambda experiment, dataset, labels: fit_and_report(
                           experiment.train, dataset, labels))


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = sweep.parser(SPEC, __doc__)
    add_asha_args(parser)
    return sweep.run_job(SPEC, parser.parse_args(argv), train_data)


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_train import main as module_main

    sys.exit(module_main())
