"""`python -m ray_jobs.tune_plg`: sweep PLG thresholds and prompt sets -> pseudo-label quality.

Each trial thresholds the cached teacher probabilities of the val split (Eq. 4; no encoder
runs) and scores the labels against the val segment truth: `plg/val/<modality>/<score>` and
the objective `plg/val/average` = mean over audio and visual of (seg F + event F) / 2, the
"Average" column of Tables 2-4. The default space is the paper's (Tables 2-4): tau_v
0.039..0.043, tau_a 0.036..0.040, VP1-VP4, AP1-AP2 as a grid (200 trials).

    python -m ray_jobs.tune_plg --preset sim-small
    ray job submit --working-dir . -- python -m ray_jobs.tune_plg --preset sim-small
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ray_jobs import jobs
from ray_jobs.space import Dimension
from ray_jobs.sweep import SweepSpec
from vaplan.cli import ArgumentParser, exits_on_user_error

OBJECTIVE = "plg/val/average"
DEFAULT_SPACE = {
    "plg.visual_threshold": Dimension("plg.visual_threshold", "grid",
                                      (0.039, 0.040, 0.041, 0.042, 0.043)),
    "plg.audio_threshold": Dimension("plg.audio_threshold", "grid",
                                     (0.036, 0.037, 0.038, 0.039, 0.040)),
    "plg.visual_prompt": Dimension("plg.visual_prompt", "grid", ("VP1", "VP2", "VP3", "VP4")),
    "plg.audio_prompt": Dimension("plg.audio_prompt", "grid", ("AP1", "AP2")),
}


def plg_quality(dataset, plg) -> dict[str, float]:
    """PLG labels of val and their quality, flat `plg/val/...` plus the objective."""
    from vaplan.pseudo_labels import generate_pseudo_labels, pseudo_label_report

    val = dataset.val
    labels = generate_pseudo_labels(dataset.teachers["val"], val.video_labels, plg)
    report = pseudo_label_report(labels, val.gt_audio, val.gt_visual)
    scores = {f"plg/val/{key}": value for key, value in report.items()}
    scores[OBJECTIVE] = (report["audio/average"] + report["visual/average"]) / 2
    return scores


def plg_trial(config: dict, ctx, dataset) -> None:
    """One PLG setting: threshold cached teacher scores, report the label quality."""
    from ray_jobs import common

    data = common.worker_data(dataset)

    def body(experiment, report) -> None:
        report(plg_quality(data, experiment.plg))

    common.tracked_trial(ctx, config, body)


SPEC = SweepSpec(job="tune_plg", sections=("plg.",), default_space=DEFAULT_SPACE,
                 metric=OBJECTIVE, trainable=plg_trial)


def data_fn(shared_dataset) -> Any:
    return lambda base, uri, experiment_id, parent: {"dataset": shared_dataset}


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ray_jobs.tune_plg",
                                     description=__doc__.split("\n")[0])
    jobs.add_args(parser, SPEC.job)
    return jobs.run_single(SPEC, parser.parse_args(argv),
                           lambda plan, shared: data_fn(shared))


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_plg import main as module_main

    sys.exit(module_main())
