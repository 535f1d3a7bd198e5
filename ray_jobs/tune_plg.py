"""Sweep PLG thresholds and prompt sets -> pseudo-label quality on val (no encoder runs).

A trial thresholds the cached teacher probabilities of val (Eq. 4) and scores the labels:
`plg/val/<modality>/<score>` and the objective `plg/val/average`, the "Average" of Tables 2-4.
Default: the paper's grid, tau_v 0.039..0.043 x tau_a 0.036..0.040 x VP1-4 x AP1-2 (200 trials).

examples:
  python -m ray_jobs.tune_plg --preset sim-small         (or: vaplan sweep plg ...)
  python -m ray_jobs.tune_plg --preset sim-tiny --space plg.visual_threshold=0.040,0.041 \
      --space plg.visual_prompt=choice:VP1,VP2 --num-samples 2
  ray job submit --working-dir . -- python -m ray_jobs.tune_plg --preset sim-small
  python -m ray_jobs.tune_plg --preset sim-small --per-class --num-samples 300

--per-class: one tau per class and modality (50 values, vaplan.plg_search) with the --set
prompt sets: the best global tau, coordinate ascent from it, and Optuna's TPE over the 50
taus (--num-samples trials, default 200, seeded with the global tau), all on val; the parent
run logs the tau table, val and test quality of the three (test: evaluation only) and the
val-best per-class taus as per_class_thresholds.json, for
--set plg.visual_threshold_per_class=@per_class_thresholds.json (audio alike).

--preset ave-sim (docs/ave.md "Threshold sweep"): AVE's (visual, audio) thresholds on val,
default 0.030..0.045 step 0.001 each (256 trials), objective `plg/val/accuracy` (AV pseudo
label segment accuracy, `vaplan.ave.quality`); the winner's config has plg.search=false:
  python -m ray_jobs.tune_plg --preset ave-sim --set data.sim.num_train=300
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from ray_jobs import sweep
from ray_jobs.common import SWEEP_TAG
from vaplan.cli import exits_on_user_error
from vaplan.sweep_options import SweepSpec, parser, plan_per_class
from vaplan.sweep_scores import PLG_OBJECTIVE as OBJECTIVE, plg_scores
from vaplan.sweeps import base_experiment, is_ave, metrics_of

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
    tune.report(plg_scores(pseudo_label_report(make_pseudo_labels(dataset, "val", experiment.plg),
                                               val.gt_audio, val.gt_visual)))


SPEC = SweepSpec(job="tune_plg", sections=("plg.",), default_space=DEFAULT_SPACE,
                 metric=OBJECTIVE, objective=OBJECTIVE, body=plg_body)

AVE_OBJECTIVE = "plg/val/accuracy"
AVE_GRID = [round(0.030 + 0.001 * i, 3) for i in range(16)]  # every 2nd of search_thresholds'
AVE_SPACE = {"plg.search": False,  # the winner's config uses its thresholds as given
             "plg.visual_threshold": {"grid_search": AVE_GRID},
             "plg.audio_threshold": {"grid_search": AVE_GRID}}


def ave_plg_body(experiment, annotations, teachers) -> None:
    """Report the quality of AVE val's AV pseudo labels (`vaplan.ave.quality`): `annotations`
    val's AveSplit, `teachers` its prompt id -> (N, T, 28) probabilities."""
    from ray import tune

    from vaplan.ave.quality import plg_label_quality

    plg = experiment.plg
    quality = plg_label_quality(annotations.video_label, annotations.truth,
                                teachers[plg.visual_prompt], teachers[plg.audio_prompt],
                                plg.visual_threshold, plg.audio_threshold)
    tune.report({f"plg/val/{key}": value for key, value in quality.items()})


AVE_SPEC = SweepSpec(job="tune_plg", sections=("plg.",), default_space=AVE_SPACE,
                     metric=AVE_OBJECTIVE, objective=AVE_OBJECTIVE, body=ave_plg_body,
                     task="ave")


def per_class_trial(config: dict, val: dict) -> None:
    """A --per-class trial: val quality of {"audio"|"visual": {class: tau}} (vaplan.plg_search)."""
    from ray import tune

    from vaplan.plg_search import MODALITIES, as_vector

    tune.report(plg_scores({f"{m}/average": val[m].score(as_vector(config, m))
                            for m in MODALITIES}))


def per_class(opts) -> int:
    """--per-class (see the module doc): one parent run in --experiment, no child runs."""
    import mlflow
    import optuna
    import pandas as pd
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from pipelines import tracking
    from vaplan.data.dataset import load_dataset
    from vaplan.plg_search import CLASSES, GRID, MODALITIES, PerClassStudy, threshold_file, \
        threshold_rows
    from vaplan.runs import short_name
    from vaplan.store_uri import resolve_tracking_uri, ui_links

    samples, folder = plan_per_class(opts)
    base, started = base_experiment(opts, SPEC), time.perf_counter()
    study = PerClassStudy(load_dataset(base.data), base.plg)
    uri = resolve_tracking_uri(opts.tracking_uri)
    experiment_id = tracking.prepare_store(uri, opts.experiment)
    optuna.logging.set_verbosity(optuna.logging.INFO if opts.verbose else optuna.logging.WARNING)
    with sweep.ray_session(opts):
        grid = tune.Tuner(
            tune.with_parameters(per_class_trial, val=study.val),
            param_space={m: {c: tune.uniform(GRID[0], GRID[-1]) for c in CLASSES}
                         for m in MODALITIES},
            tune_config=tune.TuneConfig(
                metric=OBJECTIVE, mode="max", num_samples=samples, reuse_actors=True,
                search_alg=OptunaSearch(seed=opts.seed, points_to_evaluate=[study.seed_point()]),
                trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}"),
            run_config=tune.RunConfig(name=folder.name, storage_path=str(folder.parent),
                                      verbose=int(opts.verbose))).fit()
    study.add("tpe", grid.get_best_result().config)
    trials = pd.DataFrame([{"trial": i, **metrics_of(r.metrics)}
                           for i, r in enumerate(grid) if r.error is None])
    with tracking.start_run(experiment_id, tags={SWEEP_TAG: "tune_plg",
                                                 "vaplan.per_class": "true",
                                                 "vaplan.preset": opts.preset}) as run:
        tracking.client().update_run(run.info.run_id, name=short_name(
            "tune_plg --per-class", opts.preset, *opts.overrides, run_id=run.info.run_id))
        tracking.log_flat_params(replace(base, plg=study.chosen_plg()))  # what to use
        tracking.log_scores({**study.scores(), "sweep/num_trials": len(grid),
                             "sweep/seconds": time.perf_counter() - started})
        tracking.set_tags({"vaplan.interrupted": "true"} if len(grid) < samples else {})
        mlflow.log_table(pd.DataFrame(threshold_rows(study.taus)),
                         "per_class_thresholds_table.json")
        mlflow.log_table(trials.sort_values(OBJECTIVE, ascending=False), "trials.json")
        mlflow.log_dict(threshold_file(study.taus[study.chosen()], chosen=study.chosen()),
                        "per_class_thresholds.json")
        tracking.set_description(study.description(opts.preset, len(grid)))
    print(study.description(opts.preset, len(grid)), flush=True)
    print(ui_links(uri, experiment_id, run.info.run_id), flush=True)
    return 0


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = parser(SPEC, __doc__)
    p.add_argument("--per-class", action="store_true",
                   help="search one tau per class and modality (TPE vs coordinate ascent)")
    opts = p.parse_args(argv)
    if opts.per_class:
        return per_class(opts)
    if is_ave(opts.preset):  # val's labels and teachers only, not the features
        return sweep.run_job(AVE_SPEC, opts, lambda state, data: {
            "annotations": data.val.annotations, "teachers": data.val.teachers})
    return sweep.run_job(SPEC, opts, lambda state, dataset: {"dataset": dataset})


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_plg import main as module_main

    sys.exit(module_main())
