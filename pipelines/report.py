"""A report per registered version (`report/report.html`, docs/pipelines.md "Report"): what the
page shows, gathered from the store; the page itself is `vaplan.report.render`."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from pipelines import registry, tracking
from pipelines.commands import no_progress_bar
from pipelines.reuse import OUTPUTS_TAG, STEP_TAG
from vaplan.errors import StoreNotFoundError, UserError
from vaplan.io import atomic_write, read_json
from vaplan.report import render
from vaplan.store_uri import ML_QUERY, parse_model_uri

REPORT_FILE, CONFIG, SCORES = "report/report.html", "config.json", "scores.json"
ORIGIN_STEP = "Written by the register step."
ORIGIN_REBUILT = "Rebuilt by `vaplan report` from the stored step artifacts."
FIGURES = (("Fig. 3a: per-class event-level F of the PLG labels on val", "generate_labels",
            "plots/fig3a_plg_per_class_f.png"),
           ("Fig. 3b: PLG vs PLD labels per class on val", "denoise",
            "plots/fig3b_plg_vs_pld_per_class_f.png"))


def _artifact(run, path: str, tmp: Path) -> Path | None:
    """A file of a run's outputs (the earlier run's when the step was reused), or None."""
    source = run.data.tags.get(OUTPUTS_TAG, run.info.run_id)
    try:
        with no_progress_bar():
            return Path(mlflow.artifacts.download_artifacts(
                run_id=source, artifact_path=path, dst_path=str(tmp / source)))
    except (MlflowException, OSError):
        return None


def _champion_config(decision: dict, tmp: Path) -> dict | None:
    """`config.json` of the version the gate compared with (None: none, or it is gone)."""
    if decision.get("champion_version") is None:
        return None
    try:
        found = registry.resolve_version(decision["model_name"],
                                         version=decision["champion_version"])
        found = _artifact(tracking.client().get_run(found.run_id), CONFIG, tmp)
    except MlflowException:
        return None
    return None if found is None else read_json(found)


def build_report(registration: dict, config: dict, parent_run_id: str, experiment_id: str,
                 origin: str) -> str:
    """The page of one version: its registration record and config, plus what its pipeline's
    step runs (children of `parent_run_id`) recorded: metrics, scores, figures."""
    steps = tracking.finished_children(parent_run_id, experiment_id, STEP_TAG)
    metrics = {key: value for name in ("generate_labels", "denoise") if name in steps
               for key, value in steps[name].data.metrics.items()}
    with tempfile.TemporaryDirectory(prefix="vaplan-report-") as tmp:
        scores = registration.get("scores")  # older records: the evaluate step's file
        found = None if scores or "evaluate" not in steps else _artifact(
            steps["evaluate"], SCORES, Path(tmp))
        figures = {title: _artifact(steps[step], path, Path(tmp)) if step in steps else None
                   for title, step, path in FIGURES}
        figures = {title: path and base64.b64encode(path.read_bytes()).decode()
                   for title, path in figures.items()}
        champion = _champion_config(registration["decision"], Path(tmp))
        scores = scores or (read_json(found) if found else {})
    return render(registration, config, champion, metrics, scores, figures,
                  f"{origin} Pipeline run {parent_run_id}.")


def ui_link(experiment_id: str, run_id: str) -> str:
    """The report in the MLflow UI's artifact viewer (relative: works on any server)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{REPORT_FILE}?{ML_QUERY}"


def write_version_report(out: Path, parent_run_id: str, experiment_id: str) -> Path:
    """The register step's hook: the report of the version just registered (from its
    `out/registration.json` and `out/config.json`) -> `out/report/report.html`, logged with the
    step's outputs; a link to it is appended to the version's description."""
    registration = read_json(out / registry.RECORD)
    path = atomic_write(out / REPORT_FILE, build_report(
        registration, read_json(out / CONFIG), parent_run_id, experiment_id, ORIGIN_STEP))
    name, version, client = registration["model_name"], registration["version"], tracking.client()
    link = ui_link(experiment_id, mlflow.active_run().info.run_id)
    note = (f"Report: [{REPORT_FILE}]({link}) of the register run; "
            f"`vaplan report models:/{name}/{version}` writes it to a file.")
    description = client.get_model_version(name, version).description or ""
    with tracking.promoter_credentials():  # a registry write (docs/deploy.md, "Accounts")
        client.update_model_version(name, version,
                                    description=f"{description}\n\n{note}".strip())
    return path


def open_report(model_uri: str, out: Path | None = None,
                tracking_uri: str | None = None) -> tuple[Path, str]:
    """Write the report of a registered version to `out` (default
    ./vaplan-report-<name>-v<version>.html); returns (path, "stored" or "rebuilt")."""
    try:
        name, alias, version = parse_model_uri(model_uri)
    except ValueError as err:
        raise UserError(f"{err} (see vaplan report --help)") from None
    found = registry.open_version(tracking_uri, name, alias, version)
    out = Path(out or f"vaplan-report-{name}-v{found.version}.html")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {out}/report.html")
    run = tracking.client().get_run(found.run_id)
    with tempfile.TemporaryDirectory(prefix="vaplan-report-") as tmp:
        stored = _artifact(run, REPORT_FILE, Path(tmp))
        if stored is not None:
            return atomic_write(out, stored.read_bytes()), "stored"
        record, config = registry.version_record(found), _artifact(run, CONFIG, Path(tmp))
        if not record or config is None:
            raise StoreNotFoundError(
                f"{model_uri} (v{found.version}) has no stored report, and its run "
                f"{found.run_id} lacks the {registry.RECORD} and {CONFIG} to build one from")
        text = build_report(record, read_json(config), run.data.tags.get(tracking.PARENT_TAG, ""),
                            run.info.experiment_id, ORIGIN_REBUILT)
    return atomic_write(out, text), "rebuilt"
