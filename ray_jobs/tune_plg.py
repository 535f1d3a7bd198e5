"""Sweep PLG thresholds and prompt sets -> pseudo-label quality on val (no encoder runs).

A trial thresholds the cached teacher probabilities of val (Eq. 4) and scores the labels:
`plg/val/<modality>/<score>` and the objective `plg/val/average`, the "Average" of Tables 2-4.
Default: the paper's grid, tau_v 0.039..0.043 x tau_a 0.036..0.040 x VP1-4 x AP1-2 (200 trials).

examples:
  python -m ray_jobs.tune_plg --preset sim-small         (or: vaplan sweep plg ...)
  python -m ray_jobs.tune_plg --preset sim-tiny --space plg.visual_threshold=0.040,0.041 \
      --space plg.visual_prompt=choice:VP1,VP2 --num-samples 2
  ray job submit --working-dir . -- python -m ray_jobs.tune_plg --preset sim-small
"""

from __future__ import annotations

import sys

from ray_jobs import sweep
from vaplan.cli import exits_on_user_error

OBJECTIVE = "plg/val/average"
DEFAULT_SPACE = {"plg.visual_threshold": {"grid_search": [0.039, 0.040, 0.041, 0.042, 0.043]},
                 "plg.audio_threshold": {"grid_search": [0.036, 0.037, 0.038, 0.039, 0.040]},
                 "plg.visual_prompt": {"grid_search": ["VP1", "VP2", "VP3", "VP4"]},
                 "plg.audio_prompt": {"grid_search": ["AP1", "AP2"]}}


def plg_body(experiment, dataset) -> None:
    """Report the quality of val's PLG labels (`vaplan.method.make_pseudo_labels`)."""
    from ray import tune

    from vaplan.method import make_pseudo_labels
    from vaplan.pseudo_labels import pseudo_label_report

    val = dataset.val
    report = pseudo_label_report(make_pseudo_labels(dataset, "val", experiment.plg),
                                 val.gt_audio, val.gt_visual)
    tune.report({**{f"plg/val/{key}": value for key, value in report.items()},
                 OBJECTIVE: (report["audio/average"] + report["visual/average"]) / 2})


SPEC = sweep.SweepSpec(job="tune_plg", sections=("plg.",), default_space=DEFAULT_SPACE,
                       metric=OBJECTIVE, objective=OBJECTIVE, body=plg_body)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    opts = sweep.parser(SPEC, __doc__).parse_args(argv)
    return sweep.run_job(SPEC, opts, lambda state, dataset: {"dataset": dataset})


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_plg import main as module_main

    sys.exit(module_main())
