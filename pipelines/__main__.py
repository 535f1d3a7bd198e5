"""`python -m pipelines --preset sim-small [--tracking-uri URI] [--set section.option=value]`

Runs the tracked pipeline, promotes, pulls the champion back from the registry, evaluates it on
test and prints the ten test numbers next to the logged ones, then how to browse the results.
This is what `make demo` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from vaplan.cli import ArgumentParser, exits_on_user_error
from vaplan.metrics import SCORE_KEYS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a usage error is a UserError (one line, exit 2)."""
    parser = ArgumentParser(prog="python -m pipelines", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sim-small", help="vaplan.config preset name")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="section.option=value", help="config override (repeatable)")
    parser.add_argument("--experiment", default="vaplan", help="MLflow experiment name")
    parser.add_argument("--model-name", default="vaplan-han", help="registered model name")
    parser.add_argument("--promote-metric", default="val/seg_type")
    parser.add_argument("--run-name", default="")
    parser.add_argument("--no-reuse", action="store_true", help="recompute every step")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def score_table(title: str, columns: dict[str, dict[str, float]]):
    """A rich table: one row per score, one column per source."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("score")
    for name in columns:
        table.add_column(name, justify="right")
    for key in SCORE_KEYS:
        table.add_row(key, *(f"{values.get(key, float('nan')):.2f}" for values in columns.values()))
    return table


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    """Parse, validate the whole config (before MLflow is imported or a store touched), run.

    A UserError (bad option, unknown preset, malformed override) ends as one line on stderr
    with exit status 2; anything else keeps its traceback."""
    args = parse_args(argv)
    cfg = build_config(args)
    return run_demo(cfg, args)


def build_config(args: argparse.Namespace):
    """The checked PipelineConfig of the command line (raises ConfigError naming the option)."""
    from pipelines.config import pipeline_config_from_preset

    return pipeline_config_from_preset(
        args.preset, args.overrides, tracking_uri=args.tracking_uri,
        experiment_name=args.experiment, model_name=args.model_name,
        promote_metric=args.promote_metric, run_name=args.run_name,
        reuse=not args.no_reuse, progress=not args.quiet)


def run_demo(cfg, args: argparse.Namespace) -> int:
    """Build the dataset, run the tracked pipeline, report, re-evaluate the champion."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep output readable
    from rich.console import Console

    from pipelines import steps, tracking
    from pipelines.pipeline import run

    started, console = time.perf_counter(), Console()
    console.print(f"building the {args.preset} dataset ...")
    dataset = steps.load_data(cfg.experiment.data, progress=False)
    result = run(cfg, dataset=dataset)
    _report_registration(console, cfg, result)
    _evaluate_champion(console, cfg, dataset, result)
    console.print(f"done in {time.perf_counter() - started:.0f}s. Browse the runs with:")
    print(tracking.ui_command(result.tracking_uri))
    return 0


def _report_registration(console, cfg, result) -> None:
    choice = result.registration["labels"]
    for modality, made in choice["modalities"].items():  # which labels retrain trained on
        console.print(f"labels ({modality}): {made['source'].upper()} "
                      f"(pld.apply={choice['apply']}): {made['reason']}", markup=False)
    decision = result.registration["decision"]
    reused = " (reused: nothing changed since that registration)" \
        if result.steps["register"].reused else ""
    console.print(f"registered {cfg.model_name} v{result.registration['version']}: "
                  f"{'promoted to champion' if decision['promoted'] else 'kept as candidate'} "
                  f"({decision['reason']}){reused}", markup=False)


def _evaluate_champion(console, cfg, dataset, result) -> None:
    """Pull the champion, re-evaluate it on test, print it next to the logged numbers."""
    from pipelines import commands

    uri = result.tracking_uri  # the store this run used, never a default
    with tempfile.TemporaryDirectory(prefix="vaplan-pull-") as dest:
        record = json.loads((commands.pull(cfg.model_name, dest, tracking_uri=uri)
                             / "version.json").read_text())
    version = record["version"]
    logged = commands.logged_scores(cfg.model_name, version=version, tracking_uri=uri)
    same_data = record["tags"].get("vaplan.dataset_digest") == dataset.digest
    scores = commands.evaluate_registered(f"models:/{cfg.model_name}@champion", "test",
                                          tracking_uri=uri,
                                          dataset=dataset if same_data else None)
    console.print(score_table(
        f"test scores of {cfg.model_name}@champion (v{version}), pulled from the registry",
        {"re-evaluated": scores, "logged": logged, "this run": result.test_scores}))
    drift = max((abs(scores[k] - logged[k]) for k in SCORE_KEYS if k in logged),
                default=float("nan"))
    console.print(f"re-evaluation matches the numbers logged for v{version}: {drift < 1e-3} "
                  f"(max difference {drift:.2e})")


if __name__ == "__main__":
    sys.exit(main())
