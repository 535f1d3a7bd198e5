"""Steps as child runs with reuse: a step whose key (`vaplan.reuse.step_key`) matches an earlier
FINISHED run reuses its verified outputs and replays its metrics (docs/pipelines.md "Reuse")."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import mlflow

from pipelines import tracking
from vaplan.config import flatten
from vaplan.io import read_json, replace_dir, write_json
from vaplan.reuse import (MANIFEST, StepContext, StepResult, last_values,  # noqa: F401
                          manifest_files, matches, step_key)

KEY_TAG, OUTPUTS_TAG, REUSED_TAG, STEP_TAG = ("vaplan.step_key", "vaplan.outputs_run",
                                             "vaplan.reused_from", "vaplan.step")
INPUT_TAG = "vaplan.input."  # + input name: the sha256 of a step's input


@dataclass
class StepLog:
    """Logs metrics to the step's run and records them (key, value, step) for replay."""

    records: list[tuple[str, float, int]] = field(default_factory=list)

    def scores(self, scores: Mapping[str, float], prefix: str = "", step: int = 0) -> None:
        logged = tracking.log_scores(scores, prefix=prefix, step=step)
        self.records.extend((key, value, step) for key, value in logged.items())

    def last(self) -> dict[str, float]:
        return last_values(self.records)


Compute = Callable[[Path, StepLog], None]


def find_reusable(experiment_id: str, key: str) -> str | None:
    """The run id holding the outputs of an earlier FINISHED run with this key, if any."""
    runs = tracking.search_runs(experiment_id, f"tags.`{KEY_TAG}` = '{key}' and "
                                               "attributes.status = 'FINISHED'", newest=20)
    for run in runs:
        source = run.data.tags.get(OUTPUTS_TAG)
        if source:
            return source
    return None


def _fetch(source_run_id: str, out_dir: Path) -> dict | None:
    """Download an earlier run's outputs into out_dir; None when they are gone or incomplete."""
    local = out_dir / MANIFEST
    if local.is_file() and matches(out_dir, read_json(local)):
        return read_json(local)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=out_dir.parent))
    try:
        mlflow.artifacts.download_artifacts(run_id=source_run_id, artifact_path="",
                                            dst_path=str(staging))
        manifest = read_json(staging / MANIFEST)
        if not matches(staging, manifest):
            return None
        replace_dir(staging, out_dir)  # mkdtemp's 0700 -> the umask's folder mode
        return manifest
    except Exception:  # missing artifacts, deleted run: recompute instead
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def section_params(*configs: Any) -> dict[str, Any]:
    """Config sections as params under their dotted option names (`train.lr`, `plg.*`)."""
    return {k: v for cfg in configs for k, v in flatten(cfg, f"{cfg.SECTION}.").items()}


def run_step(ctx: StepContext, name: str, config: Any, inputs: Mapping[str, str],
             compute: Compute, params: Mapping[str, Any] | None = None,
             on_start: Callable[[], None] | None = None,
             check_reuse: Callable[[Path], bool] | None = None,
             same_as: str | None = None) -> StepResult:
    """Run (or reuse) one step as a child run of ctx.parent_run_id.

    `config` (with `inputs`) makes the reuse key; `params` are what the run logs (default:
    `config`'s own section, e.g. `train.*`), so an option has one name in every run. The input
    digests are tags `vaplan.input.<name>`. on_start runs inside the child run either way (e.g.
    to log dataset inputs); check_reuse can veto reusing fetched outputs (e.g. a registered
    version that was deleted since); `same_as` names a step whose computation this one is
    (its key is that step's, so that step's outputs are reused: retrain on PLG's labels).
    """
    key = step_key(same_as or name, config, inputs)  # same_as: the step it would repeat
    out_dir = ctx.work_dir / f"{name}-{key[:12]}"
    source = find_reusable(ctx.experiment_id, key) if ctx.reuse else None
    tags = {KEY_TAG: key, STEP_TAG: name, **{f"{INPUT_TAG}{k}": v for k, v in inputs.items()}}
    with tracking.start_child_run(ctx.parent_run_id, ctx.experiment_id, run_name=name,
                                  tags=tags) as run:
        run_id = run.info.run_id
        tracking.log_flat_params(section_params(config) if params is None else params)
        if on_start is not None:
            on_start()
        manifest = _fetch(source, out_dir) if source else None
        if manifest is not None and (check_reuse is None or check_reuse(out_dir)):
            _replay(out_dir, source)
            return _result(name, key, run_id, source, out_dir, manifest, reused=True)
        manifest = _compute(compute, out_dir, name, key)
        mlflow.log_artifacts(str(out_dir))
        tracking.set_tags({OUTPUTS_TAG: run_id})
        return _result(name, key, run_id, run_id, out_dir, manifest, reused=False)


def _compute(compute: Compute, out_dir: Path, name: str, key: str) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    log = StepLog()
    compute(out_dir, log)
    write_json(out_dir / "metrics.json", [list(record) for record in log.records])
    manifest = {"step": name, "key": key, "files": manifest_files(out_dir)}
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def _replay(out_dir: Path, source: str) -> None:
    """Re-log the earlier run's metrics (with their steps) and point at it."""
    by_step: dict[int, dict[str, float]] = {}
    for key, value, step in read_json(out_dir / "metrics.json"):
        by_step.setdefault(int(step), {})[key] = float(value)
    for step, scores in sorted(by_step.items()):
        tracking.log_scores(scores, step=step)
    tracking.set_tags({REUSED_TAG: source, OUTPUTS_TAG: source})
    note = {"reused_from": source, "outputs": f"runs:/{source}/",
            "why": "same step config and input digests as that run; its files were reused"}
    mlflow.log_dict(note, "reused_from.json")  # a pointer for the UI


def _result(name: str, key: str, run_id: str, source: str, out_dir: Path, manifest: dict,
            reused: bool) -> StepResult:
    records = read_json(out_dir / "metrics.json") if (out_dir / "metrics.json").is_file() else []
    return StepResult(name, key, run_id, source, out_dir, dict(manifest["files"]),
                      last_values(records), reused)
