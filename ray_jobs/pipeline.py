"""tune_plg -> tune_train -> tune_pld -> the tracked pipeline, as one Ray job.

Each sweep's winner is the next one's base config; a PLD modality whose best setting does not
improve on its PLG labels on val is switched off. The final config runs the tracked pipeline
in the driver (`pipelines.pipeline.run`, in `--pipeline-experiment`), whose promotion gate
decides whether the new `vaplan-han` version becomes `champion`. All runs are tagged
`vaplan.ray_pipeline=<name>`. `--space` items go to the sweep of their section;
`--num-samples` is tune_train's. `--resume` skips finished sweeps, resumes an interrupted one.

examples:
  python -m ray_jobs.pipeline --preset sim-small        (or: vaplan sweep all ...)
  ray job submit --working-dir . -- python -m ray_jobs.pipeline --preset sim-small
"""

from __future__ import annotations

import dataclasses
import sys
from argparse import Namespace

from pipelines.config import PipelineConfig
from ray_jobs import sweep, tune_pld, tune_plg, tune_train
from vaplan.cli import exits_on_user_error
from vaplan.config import apply_overrides, to_dict
from vaplan.data.dataset import load_dataset
from vaplan.store_uri import ui_links
from vaplan.sweep_options import EXIT_INTERRUPTED, parser, plan
from vaplan.sweeps import SpaceError, SweepState, base_experiment, searched, sweep_folder

SPECS = (tune_plg.SPEC, tune_train.SPEC, tune_pld.SPEC)
SPEC = dataclasses.replace(tune_train.SPEC, job="pipeline", sections=("plg.", "train.", "pld."),
                           default_space={})


def plan_all(opts: Namespace, root) -> list[tuple[SweepState, Namespace]]:
    """The three sweeps and their options, checked before Ray starts (grids: 1 sample)."""
    for item in opts.space:
        if not item.startswith(SPEC.sections):
            raise SpaceError(f"--space {item!r}: the pipeline searches plg.*, train.*, pld.*")
    base, grids = base_experiment(opts, SPEC), Namespace(**{**vars(opts), "num_samples": None})
    return [(plan(spec, spec_opts, root / f"{root.name}-{spec.job}", base,
                        [i for i in opts.space if i.startswith(spec.sections)], False), spec_opts)
            for spec, spec_opts in zip(SPECS, (grids, opts, grids))]


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = parser(SPEC, __doc__, asha=True)
    p.add_argument("--model-name", default=None, help="registered model name (default: "
                   "vaplan-<train.model.name>, e.g. vaplan-han, vaplan-mgn)")
    p.add_argument("--promote-metric", default="val/seg_type")
    p.add_argument("--pipeline-experiment", default="vaplan",
                   help="MLflow experiment of the final pipeline run")
    opts = p.parse_args(argv)
    root = sweep_folder("pipeline", opts)
    plans = plan_all(opts, root)
    experiment = plans[0][0].experiment
    PipelineConfig(experiment=experiment, experiment_name=opts.pipeline_experiment,
                   model_name=opts.model_name, promote_metric=opts.promote_metric)  # checked
    dataset = load_dataset(experiment.data)
    data_fns = (lambda s: {"dataset": dataset}, lambda s: tune_train.train_data(s, dataset),
                tune_pld.stage_data(dataset, None, False))
    tags, winners = {"vaplan.ray_pipeline": root.name}, []
    with sweep.ray_session(opts):
        for (state, spec_opts), spec, data_fn in zip(plans, SPECS, data_fns):
            if not state.parent_run_id:
                state.base = to_dict(experiment)
            state = sweep.run_sweep(spec, spec_opts, state, root / state.name, data_fn, tags)
            if not state.finished:
                return EXIT_INTERRUPTED
            experiment = state.winner
            winners += [f"{k}={v}" for k, v in state.best["best"].items()
                        if k.startswith(tuple(searched(state.space)))]
        metrics = state.best["metrics"]
        experiment = apply_overrides(experiment, [  # PLD only where it improved the labels
            f"pld.{m}={str(metrics.get(f'gain/{m}/average', 0.0) > 0).lower()}"
            for m in ("audio", "visual")])
        return final_pipeline(experiment, dataset, opts, state.tracking_uri, tags, winners)


def final_pipeline(experiment, dataset, opts, uri: str, tags: dict, winners: list) -> int:
    """The tracked pipeline with the winning config, in the driver; prints the decision."""
    from pipelines import tracking
    from pipelines.pipeline import run

    result = run(PipelineConfig(
        experiment=experiment, preset=opts.preset, overrides=tuple(winners),
        experiment_name=opts.pipeline_experiment, tracking_uri=uri, model_name=opts.model_name,
        promote_metric=opts.promote_metric, progress=False), dataset=dataset)
    tracking.set_tags(tags, run_id=result.parent_run_id)
    registration = result.registration or {}
    decision = registration.get("decision", {})
    print(f"final pipeline run: val seg_type {result.val_scores.get('seg_type', 0):.2f}, test "
          f"seg_type {result.test_scores.get('seg_type', 0):.2f} (reused steps: "
          f"{result.reused_steps or 'none'}); {opts.model_name} v{registration.get('version')} "
          f"{'promoted to champion' if decision.get('promoted') else 'kept as candidate'} "
          f"({decision.get('reason', '')})")
    print(ui_links(uri, result.experiment_id, result.parent_run_id), flush=True)
    return 0


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.pipeline import main as module_main

    sys.exit(module_main())
