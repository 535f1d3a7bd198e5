"""Sweep the training objective -> val seg_type per epoch, with ASHA.

A trial trains HAN (`vaplan.method.fit`) on the base config's PLG labels (made once by the
driver) and reports the val scores every epoch (`epoch/val/seg_type`, `epoch/train_loss`,
`best/val/seg_type`, ...; step = epoch); ASHA stops weak trials. Default (Table 5's knobs):
loss variant richness/naive/video, lambda 0.25/0.5/1, CR and SR on/off, lr log-uniform
1e-4..1e-3, 8 samples. `--cpus-per-trial` is also the torch thread count. `--group-size G`
trains G trials per Ray trial as one batched model, each still its own MLflow run; with
`--gpus-per-trial auto` (the default) trials share the cluster's GPUs, or run on CPU.

examples:
  python -m ray_jobs.tune_train --preset sim-small --num-samples 8 --max-concurrent 2
  python -m ray_jobs.tune_train --preset sim-tiny --space train.lr=loguniform:1e-4,1e-3 \
      --space train.loss.variant=richness,naive --num-samples 2
  python -m ray_jobs.tune_train --preset sim-small --num-samples 8 --group-size 4
  ray job submit --working-dir . -- python -m ray_jobs.tune_train --gpus-per-trial 0.25
"""

from __future__ import annotations

import sys

from ray_jobs import sweep
from vaplan.cli import exits_on_user_error
from vaplan.sweep_options import SweepSpec, parser
from vaplan.trial_groups import GroupReport, check_group_size, check_group_space, epoch_metrics

METRIC, OBJECTIVE = "epoch/val/seg_type", "best/val/seg_type"
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


def fit_and_report(cfg, dataset, labels) -> None:
    """`vaplan.method.fit` with every epoch's val scores reported to Tune."""
    from ray import tune

    from vaplan.method import fit

    best = float("-inf")

    def on_epoch(stats) -> None:
        nonlocal best
        best = max(best, stats.val.get(cfg.select_metric, float("-inf")))
        tune.report(epoch_metrics(stats, cfg.select_metric, best))

    fit(cfg, dataset, labels, on_epoch=on_epoch, progress=False)


def fit_group_and_report(cfgs, dataset, labels) -> None:
    """--group-size: the members trained as one batched computation (`vaplan.batched`), each
    epoch reported per member (`GroupReport`; the driver logs one run per member). Raises the
    first member's error when every member failed (the trial is then ERROR)."""
    from ray import tune

    from vaplan.batched import train_group
    from vaplan.train import build_targets

    report, targets = GroupReport(cfgs), build_targets(dataset.train, labels)
    results = train_group(cfgs, dataset.train, [targets] * len(cfgs), dataset.val,
                          on_group_epoch=lambda e, out: tune.report(report.update(e, out)))
    if all(isinstance(result, Exception) for result in results):
        raise results[0]


def train_body(experiment, dataset, labels) -> None:
    """A trial's body: one experiment, or a group's list of them."""
    if isinstance(experiment, list):
        return fit_group_and_report([e.train for e in experiment], dataset, labels)
    return fit_and_report(experiment.train, dataset, labels)


def train_data(state, dataset) -> dict:
    """The dataset and the base config's PLG labels of train, made once by the driver."""
    from vaplan.method import make_pseudo_labels

    return {"dataset": dataset,
            "labels": make_pseudo_labels(dataset, "train", state.experiment.plg)}


SPEC = SweepSpec(job="tune_train", sections=("train.",), default_space=DEFAULT_SPACE,
                 metric=METRIC, objective=OBJECTIVE, num_samples=8, scheduler=asha, trains=True,
                 body=train_body)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = parser(SPEC, __doc__, asha=True)
    p.add_argument("--group-size", type=int, default=1, metavar="G",
                   help="train G trials per Ray trial as one batched model (docs/ray.md)")
    opts = p.parse_args(argv)
    check_group_space([item.split("=", 1)[0].strip() for item in opts.space],
                      check_group_size(opts.group_size))  # before Ray; files: common.py
    return sweep.run_job(SPEC, opts, train_data)


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_train import main as module_main

    sys.exit(module_main())
