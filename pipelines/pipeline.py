"""`run(cfg)`: the tracked pipeline, one parent run with a child run per step; `run_and_check`
(behind `vaplan run`) also pulls the champion back and re-evaluates it (docs/pipelines.md)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlflow
from rich.console import Console
from rich.table import Table

import vaplan
from pipelines import commands, registry, steps, tracking
from pipelines.config import SOURCE_STEPS, PipelineConfig
from pipelines.reuse import StepContext, StepResult
from pipelines.steps.common import MA_FILE, PLD_FILE, PLG_FILE, VIDEO_FILE
from pipelines.steps.labels import CHOICE_FILE, tag_label_choice
from vaplan.config import ExperimentConfig, apply_overrides, flatten, to_dict
from vaplan.data.dataset import load_dataset
from vaplan.data.types import Dataset
from vaplan.io import read_json, write_json
from vaplan.method import source_record
from vaplan.metrics import SCORE_KEYS
from vaplan.report import flat_scores, results_markdown, run_description
from vaplan.runs import short_name, stop_on_signals
from vaplan.store_uri import ui_links

AfterStep = Callable[[str, StepResult], None]
LABELS_TAG = "vaplan.labels"  # labels.source on the parent and register runs (not the version)
# labels.source -> (the step, its label table) the registered model trained on
TRAINED_ON = {"pld": ("denoise", PLD_FILE), "plg": ("generate_labels", PLG_FILE),
              "video": ("train", VIDEO_FILE), "ma": ("ma_labels", MA_FILE)}


@dataclass
class PipelineResult:
    """What a finished pipeline produced (ids to find it in MLflow, scores, registration).

    The steps' local files (`StepResult.out_dir`) outlive `run` only when
    `PipelineConfig.work_dir` is set; otherwise fetch them from the runs' artifacts.
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_name: str = ""
    steps: dict[str, StepResult] = field(default_factory=dict)
    val_scores: dict[str, float] = field(default_factory=dict)
    test_scores: dict[str, float] = field(default_factory=dict)
    registration: dict | None = None
    seconds: float = 0.0

    @property
    def reused_steps(self) -> list[str]:
        return [name for name, result in self.steps.items() if result.reused]


def _parent_params(cfg: PipelineConfig, dataset: Dataset) -> dict:
    """The flattened config under its dotted names (`train.lr`), dataset facts, pipeline options."""
    return {**flatten(cfg.experiment), "data.digest": dataset.digest,
            "data.description": dataset.description, "data.num_train": len(dataset.train),
            "data.num_val": len(dataset.val), "data.num_test": len(dataset.test),
            "pipeline.preset": cfg.preset, "pipeline.model_name": cfg.model_name,
            "pipeline.promote_metric": cfg.promote_metric}


def run(cfg: PipelineConfig, after_step: AfterStep | None = None,
        dataset: Dataset | None = None) -> PipelineResult:
    """Run the whole pipeline; `after_step(name, result)` is called after each step.

    A step that raises (or an `after_step` that raises) fails its child run and the parent
    run; running again reuses every step that had finished. SIGTERM/SIGINT end the open runs
    KILLED at once (`vaplan.runs.Terminated`, exit 128 + signal); runs a dead pipeline of this
    host left RUNNING are marked KILLED when the store is prepared.
    """
    with stop_on_signals():
        return _run(cfg, after_step, dataset)


def _run(cfg: PipelineConfig, after_step: AfterStep | None,
         dataset: Dataset | None) -> PipelineResult:
    started, console = time.perf_counter(), Console(stderr=True, quiet=not cfg.progress)
    uri = tracking.use_tracking_uri(cfg.tracking_uri)
    experiment_id = tracking.prepare_store(uri, cfg.experiment_name)
    console.print(f"[bold]vaplan pipeline[/] preset={cfg.preset or '-'} store={uri}")
    if dataset is None:
        with console.status("building dataset"):
            dataset = load_dataset(cfg.experiment.data)
    console.print(f"dataset: {dataset.description} (digest {dataset.digest[:12]})")
    tags = {"vaplan.preset": cfg.preset, "vaplan.version": vaplan.__version__,
            "vaplan.dataset_digest": dataset.digest, "vaplan.pipeline": "parent",
            LABELS_TAG: cfg.experiment.labels.source}
    with tracking.start_run(experiment_id, run_name=cfg.run_name or cfg.preset or None,
                            tags=tags) as parent:
        result = PipelineResult(uri, experiment_id, parent.info.run_id)
        result.run_name = cfg.run_name or short_name(
            cfg.preset or "custom", *cfg.overrides, run_id=result.parent_run_id)
        tracking.client().update_run(result.parent_run_id, name=result.run_name)
        tracking.log_flat_params(_parent_params(cfg, dataset))
        with tempfile.TemporaryDirectory(prefix="vaplan-pipeline-") as tmp:
            work_dir = Path(cfg.work_dir or tmp)
            _log_config(cfg, dataset, work_dir)
            ctx = StepContext(experiment_id, parent.info.run_id, work_dir, cfg.reuse,
                              cfg.progress)
            _run_steps(cfg, ctx, dataset, result, after_step, console)
            _log_parent_summary(cfg, result)
            tracking.set_description(_describe(cfg, dataset, result))
    result.seconds = time.perf_counter() - started
    console.print(f"[bold green]pipeline finished[/] in {result.seconds:.0f}s "
                  f"(parent run {result.parent_run_id}; reused: {result.reused_steps or 'none'})")
    return result


def _log_config(cfg: PipelineConfig, dataset: Dataset, work_dir: Path) -> None:
    path = write_json(work_dir / "config.json", {
        "experiment": to_dict(cfg.experiment), "preset": cfg.preset,
        "model_name": cfg.model_name, "promote_metric": cfg.promote_metric,
        "dataset": {"digest": dataset.digest, "description": dataset.description}})
    mlflow.log_artifact(str(path))


def _plan(cfg: PipelineConfig, ctx: StepContext, dataset: Dataset,
          result: PipelineResult) -> list[tuple[str, Callable[[], StepResult]]]:
    """The steps of `labels.source` (SOURCE_STEPS) in order, each a call on the steps before.

    pld: PLG -> train -> PLD (+ the choice) -> retrain -> evaluate -> register; plg: PLG ->
    train -> evaluate -> register; video: train on y (PLG still made: the reports compare
    with it); ma: train on y (loss baseline, as Table 8's base rows) -> MA labels -> retrain on
    them -> evaluate -> register."""
    exp, done, source = cfg.experiment, result.steps, cfg.experiment.labels.source
    plan: dict[str, Callable[[], StepResult]] = {
        "generate_labels": lambda: steps.generate_labels(ctx, dataset, exp.plg)}
    if source in ("pld", "plg"):
        plan["train"] = lambda: steps.train(ctx, dataset, exp.train, done["generate_labels"])
    if source == "pld":
        plan["denoise"] = lambda: steps.denoise(ctx, dataset, exp.pld, exp.plg,
                                                done["generate_labels"], done["train"])
        plan["retrain"] = lambda: steps.retrain(ctx, dataset, exp.train, done["denoise"],
                                                done["generate_labels"])
    if source == "video":
        plan["train"] = lambda: steps.train(ctx, dataset, exp.train, None, source="video")
    if source == "ma":
        plan["train"] = lambda: steps.train(ctx, dataset, video_label_model(exp).train, None,
                                            source="video")
        plan["ma_labels"] = lambda: steps.ma_labels(ctx, dataset, exp.train.seed, done["train"])
        plan["retrain"] = lambda: steps.train(ctx, dataset, exp.train, done["ma_labels"],
                                              labels_name=MA_FILE, step_name="retrain",
                                              source="ma")
    model = "retrain" if "retrain" in plan else "train"
    labels_step, labels_file = TRAINED_ON[source]
    plan["evaluate"] = lambda: steps.evaluate(ctx, dataset, done[model], done["generate_labels"],
                                              done.get("denoise"), cfg.timeline_videos)
    plan["register"] = lambda: steps.register(
        ctx, dataset, exp, cfg.model_name, cfg.promote_metric, done[model], done[labels_step],
        done["evaluate"], _label_quality(result), labels_file=labels_file,
        choice=None if source == "pld" else source_record(source))
    return list(plan.items())


def video_label_model(exp: ExperimentConfig) -> ExperimentConfig:
    """The config of labels.source=ma's first model, trained on the weak labels y with Eq. 2
    (the loss of Table 8's base rows, whose model makes the `+ma` rows' labels)."""
    return apply_overrides(exp, ["labels.source=video", "train.loss.variant=baseline"])


def _run_steps(cfg: PipelineConfig, ctx: StepContext, dataset: Dataset,
               result: PipelineResult, after_step: AfterStep | None, console) -> None:
    plan = _plan(cfg, ctx, dataset, result)
    if not cfg.register:
        plan = plan[:-1]
    for index, (name, step) in enumerate(plan, start=1):
        console.rule(f"[bold]step {index}/{len(plan)}: {name}")
        began = time.perf_counter()
        result.steps[name] = step()
        how = "reused" if result.steps[name].reused else "done"
        console.print(f"{name}: {how} in {time.perf_counter() - began:.1f}s "
                      f"(run {result.steps[name].run_id})")
        if after_step is not None:
            after_step(name, result.steps[name])
    assert [name for name, _ in plan] == list(
        SOURCE_STEPS[cfg.experiment.labels.source][:len(plan)])
    if "register" in result.steps:
        tracking.set_tags({LABELS_TAG: cfg.experiment.labels.source},
                          run_id=result.steps["register"].run_id)


def _label_quality(result: PipelineResult) -> dict[str, float]:
    """The label quality metrics of the label steps on val: `plg/`, `pld/`, `labels/`, `ma/`."""
    return {k: v for name in ("generate_labels", "denoise", "ma_labels")
            if name in result.steps for k, v in result.steps[name].metrics.items()
            if k.startswith(("plg/", "pld/", "labels/", "ma/"))}


def _labels_record(cfg: PipelineConfig, result: PipelineResult) -> dict:
    """Which labels the registered model trained on: the denoise step's choice (pld), else
    the fixed record of labels.source (`vaplan.method.source_record`)."""
    source = cfg.experiment.labels.source
    if source == "pld":
        return read_json(result.steps["denoise"].path(CHOICE_FILE))
    return source_record(source)


def _describe(cfg: PipelineConfig, dataset: Dataset, result: PipelineResult) -> str:
    """The parent run's description: what ran, then the registered version's description (the
    gate's decision with its interval, scores, label quality and choice) or the results."""
    results = None if result.registration is not None else results_markdown(
        {"val": result.val_scores, "test": result.test_scores}, _label_quality(result),
        _labels_record(cfg, result))
    return run_description(result.run_name, cfg.preset, cfg.overrides, dataset.description,
                           dataset.digest, cfg.model_name, result.registration, results)


def _log_parent_summary(cfg: PipelineConfig, result: PipelineResult) -> None:
    """Copy the headline metrics of the steps onto the parent run; log label-set inputs; tag
    the label decision (`pld.decision.<modality>`, labels.source=pld) and the promotion
    decision."""
    source = cfg.experiment.labels.source
    labels = result.steps["generate_labels"]
    trained_on, trained_file = TRAINED_ON[source]
    tracking.log_scores(_label_quality(result))
    if source == "pld":
        tag_label_choice(_labels_record(cfg, result), run_id=result.parent_run_id)
    scores = read_json(result.steps["evaluate"].path("scores.json"))
    result.val_scores, result.test_scores = scores["val"], scores["test"]
    tracking.log_scores(flat_scores(scores))
    steps.log_label_input(labels, steps.PLG_FILE, "plg")
    if source != "plg":
        steps.log_label_input(result.steps[trained_on], trained_file, source)
    if "register" in result.steps:
        result.registration = read_json(result.steps["register"].path("registration.json"))
        decision = result.registration["decision"]
        tracking.log_scores({k: v for k, v in result.steps["register"].metrics.items()
                             if k.startswith("registry/improvement")})
        tracking.set_tags({"vaplan.model_version": result.registration["version"],
                           "vaplan.promotion": "promoted" if decision["promoted"] else "kept",
                           "vaplan.promotion.reason": decision["reason"]})


def run_and_check(cfg, console=None) -> dict:
    """`vaplan run` / `make demo`: run the tracked pipeline, print which labels the model was
    trained on and the gate's decision, pull the champion back from the registry, re-evaluate
    it on test next to the logged numbers, and print the UI links. Returns the summary."""
    os.environ.setdefault(commands.PROGRESS_BAR, "false")  # keep the output readable
    started, console = time.perf_counter(), console or Console()
    console.print(f"building the {cfg.preset or 'custom'} dataset ...")
    dataset = load_dataset(cfg.experiment.data)
    result = run(cfg, dataset=dataset)
    summary = {"parent_run_id": result.parent_run_id, "run_name": result.run_name}
    if result.registration is not None:
        _print_registration(console, cfg, result)
        summary["drift"] = _check_champion(console, cfg, dataset, result)
    console.print(f"done in {time.perf_counter() - started:.0f}s: run {result.run_name!r}")
    print(ui_links(result.tracking_uri, result.experiment_id, result.parent_run_id))
    return summary


def _print_registration(console, cfg, result) -> None:
    choice = result.registration["labels"]
    how = (f"labels.source={cfg.experiment.labels.source}" if "source" in choice
           else f"pld.apply={choice['apply']}")
    for modality, made in choice["modalities"].items():  # which labels it trained on
        console.print(f"labels ({modality}): {made['source'].upper()} ({how}): "
                      f"{made['reason']}", markup=False)
    decision = result.registration["decision"]
    reused = " (reused: nothing changed since that registration)" \
        if result.steps["register"].reused else ""
    console.print(f"registered {cfg.model_name} v{result.registration['version']}: "
                  f"{'promoted to champion' if decision['promoted'] else 'kept as candidate'} "
                  f"({decision['reason']}){reused}", markup=False)


def _check_champion(console, cfg, dataset: Dataset, result) -> float:
    """Pull the champion, re-evaluate it on test, print it next to the logged numbers;
    returns the largest difference to the numbers logged for it."""
    uri = result.tracking_uri  # the store this run used, never a default
    with tempfile.TemporaryDirectory(prefix="vaplan-pull-") as dest:
        record = read_json(commands.pull(cfg.model_name, dest, tracking_uri=uri) / "version.json")
    version = record["version"]
    logged = commands.logged_scores(cfg.model_name, version=version, tracking_uri=uri)
    same_data = record["tags"].get(registry.DATASET_TAG) == dataset.digest
    scores = commands.evaluate_registered(f"models:/{cfg.model_name}@champion", "test",
                                          tracking_uri=uri, dataset=dataset if same_data else None)
    columns = {"re-evaluated": scores, "logged": logged, "this run": result.test_scores}
    table = Table(title=f"test scores of {cfg.model_name}@champion (v{version}), "
                        f"pulled from the registry")
    table.add_column("score")
    for name in columns:
        table.add_column(name, justify="right")
    for key in SCORE_KEYS:
        table.add_row(key, *(f"{values.get(key, float('nan')):.2f}" for values in columns.values()))
    console.print(table)
    drift = max((abs(scores[k] - logged[k]) for k in SCORE_KEYS if k in logged),
                default=float("nan"))
    console.print(f"re-evaluation matches the numbers logged for v{version}: {drift < 1e-3} "
                  f"(max difference {drift:.2e})")
    return drift
