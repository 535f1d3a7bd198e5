"""`python -m ray_jobs.pipeline`: tune_plg -> tune_train -> tune_pld -> the tracked pipeline.

Each sweep's winner is applied to the base config of the next one; a PLD modality whose best
setting does not improve on its PLG labels (gain <= 0 on val) is switched off. The final
config then runs the tracked pipeline (`pipelines.pipeline.run`: labels -> train -> denoise ->
retrain -> evaluate -> register) as a Ray task; its `generate_labels` and `train` steps are
reused from tune_pld's stage one, and the registry's promotion gate decides whether the new
`vaplan-han` version becomes `champion`. MLflow: one parent run per sweep (child run per
trial) plus the pipeline's parent run, all tagged `vaplan.ray_pipeline=<name>`.
`--space` / `--space-file` entries go to the sweep of their section (plg.*, train.*, pld.*);
`--num-samples` is tune_train's (the other two are grids). `--resume` continues the latest
pipeline of the preset: finished sweeps are skipped, an interrupted one is resumed.

    python -m ray_jobs.pipeline --preset sim-small
    ray job submit --working-dir . -- python -m ray_jobs.pipeline --preset sim-small
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from pipelines.config import PipelineConfig
from ray_jobs import common, jobs, tune_pld, tune_plg, tune_train
from ray_jobs.runner import best_experiment, plan_sweep, run_sweep
from ray_jobs.space import SpaceError
from ray_jobs.sweep import (add_sweep_args, base_experiment, job_tracking_uri, options_from_args,
                            resolve_name, storage_root)
from vaplan.cli import ArgumentParser, exits_on_user_error
from vaplan.config import apply_overrides
from vaplan.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m ray_jobs.pipeline",
                                     description=__doc__.split("\n")[0])
    add_sweep_args(parser, "pipeline")
    tune_train.add_asha_args(parser)
    parser.add_argument("--model-name", default="vaplan-han", help="registered model name")
    parser.add_argument("--promote-metric", default="val/seg_type")
    return parser.parse_args(argv)


def plan_all(opts, root):
    """Validate the three sweeps before Ray starts; returns their plans (in order)."""
    base = base_experiment(opts, tune_train.SPEC)
    grids = dataclasses.replace(opts, num_samples=None)
    plans = []
    for spec, stage_opts in ((tune_plg.SPEC, grids), (tune_train.SPEC, opts),
                             (tune_pld.SPEC, grids)):
        items = [item for item in opts.space if item.startswith(spec.sections)]
        unknown = [item for item in opts.space
                   if not item.startswith(("plg.", "train.", "pld."))]
        if unknown:
            raise SpaceError(f"--space {unknown[0]!r}: the pipeline searches plg.*, train.* "
                             f"and pld.* options")
        plans.append((plan_sweep(spec, stage_opts, root=root, name=f"{root.name}-{spec.job}",
                                 base=base,
                                 space_items=items, must_exist=False), stage_opts))
    return plans


def pld_switches(experiment, metrics: dict):
    """Keep PLD only for the modalities where it improved the labels on val."""
    flags = [f"pld.{m}={str(metrics.get(f'gain/{m}/average', 0.0) > 0).lower()}"
             for m in ("audio", "visual")]
    return apply_overrides(experiment, flags)


def final_pipeline(experiment, shared, opts, uri: str, name: str, model_name: str,
                   promote_metric: str) -> dict:
    """The tracked pipeline with the winning config (runs as a Ray task); a summary dict."""
    from pipelines import tracking
    from pipelines.config import PipelineConfig
    from pipelines.pipeline import run

    data = common.worker_data(shared)
    cfg = PipelineConfig(experiment=experiment, preset=opts.preset,
                         experiment_name=opts.experiment, tracking_uri=uri,
                         model_name=model_name, promote_metric=promote_metric,
                         run_name=f"{name}-final", progress=False)
    result = run(cfg, dataset=data)
    tracking.set_tags({"vaplan.ray_pipeline": name}, run_id=result.parent_run_id)
    return {"parent_run_id": result.parent_run_id, "registration": result.registration,
            "val": result.val_scores, "test": result.test_scores,
            "reused": result.reused_steps}


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = parse_args(argv)
    opts = options_from_args(args)
    root_dir = storage_root(opts)
    try:
        name = resolve_name("pipeline", opts, root_dir)
        plans = plan_all(opts, root_dir / name)
        PipelineConfig(experiment=plans[0][0].base, model_name=args.model_name,
                       promote_metric=args.promote_metric)  # the final step's options, now
    except (UserError, FileNotFoundError) as err:
        return jobs.refuse(err)
    base = plans[0][0].base
    dataset = jobs.load_dataset(base.data)
    uri = job_tracking_uri(opts)
    tags = {"vaplan.ray_pipeline": name}
    with jobs.ray_session(opts, uri):
        shared = jobs.share_dataset(dataset)
        data_fns = [lambda *_: {"dataset": shared}, lambda *_: {"dataset": shared},
                    tune_pld.stage_one_data(opts, shared, None, False)]
        experiment = base
        for (plan, stage_opts), data_fn in zip(plans, data_fns):
            if plan.state is None:
                plan.base = experiment
            outcome = run_sweep(plan, stage_opts, data_fn, tags=tags)
            if outcome.interrupted:
                return jobs.EXIT_INTERRUPTED
            experiment = best_experiment(plan, outcome)
        experiment = pld_switches(experiment, outcome.best_metrics)
        import ray

        task = ray.remote(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial)(
            final_pipeline)
        summary = ray.get(task.remote(experiment, shared, opts, uri, name, args.model_name,
                                      args.promote_metric))
    report(summary, args.model_name, uri)
    return 0


def report(summary: dict, model_name: str, uri: str) -> None:
    from pipelines import tracking

    registration = summary["registration"] or {}
    decision = registration.get("decision", {})
    state = "promoted to champion" if decision.get("promoted") else "kept as candidate"
    print(f"final pipeline run {summary['parent_run_id']} (reused steps: "
          f"{summary['reused'] or 'none'}); val seg_type {summary['val'].get('seg_type', 0):.2f}, "
          f"test seg_type {summary['test'].get('seg_type', 0):.2f}")
    print(f"registered {model_name} v{registration.get('version')}: {state} "
          f"({decision.get('reason', '')})")
    print(f"browse: {tracking.ui_command(uri)}")


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.pipeline import main as module_main

    sys.exit(module_main())
