"""A report per registered version: one self-contained HTML file (`report/report.html`).

The register step writes it (an artifact of the run that registered the version, linked from
its description); `vaplan report MODEL_URI` copies it out, or rebuilds it from the stored
artifacts for older versions. Nothing is recomputed: label quality before/after PLD (step
metrics) and the labels used (`labels/choice.json`), the ten test/val numbers, Figs. 3a/3b (the
steps' PNGs, base64), the gate's decision (`registration.json`), and the config diff to the
champion it was compared with (`config.json` of both versions' runs).
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from pipelines import registry, tracking
from pipelines.artifacts import read_json
from pipelines.commands import no_progress_bar
from pipelines.reuse import OUTPUTS_TAG, STEP_TAG
from vaplan.config import flatten
from vaplan.errors import StoreNotFoundError, UserError
from vaplan.io import atomic_write
from vaplan.metrics import SCORE_KEYS

REPORT_FILE, CONFIG, SCORES = "report/report.html", "config.json", "scores.json"
ORIGIN_STEP = "Written by the register step."
ORIGIN_REBUILT = "Rebuilt by `vaplan report` from the stored step artifacts."
FIGURES = (("Fig. 3a: per-class event-level F of the PLG labels on val", "generate_labels",
            "plots/fig3a_plg_per_class_f.png"),
           ("Fig. 3b: PLG vs PLD labels per class on val", "denoise",
            "plots/fig3b_plg_vs_pld_per_class_f.png"))
QUALITY_KEYS = {"video_precision": "video prec.", "seg": "seg F", "event": "event F",
                "average": "average"}
STYLE = ("body{font:14px/1.45 system-ui,sans-serif;max-width:1180px;margin:24px auto;color:"
         "#212529}table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid "
         "#dee2e6;padding:4px 9px;text-align:right}th{background:#f1f3f5}.l{text-align:left}"
         ".ok{color:#2b8a3e}.no{color:#c92a2a}img{max-width:100%}code{background:#f1f3f5}")


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
    steps = {run.data.tags[STEP_TAG]: run for run in tracking.child_runs(
        parent_run_id, experiment_id) if run.info.status == "FINISHED"
        and STEP_TAG in run.data.tags}  # oldest first: the latest run of a step wins
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


def render(registration: dict, config: dict, champion_config: dict | None,
           metrics: dict[str, float], scores: dict, figures: dict[str, str | None],
           origin: str) -> str:
    """The page (pure; every value escaped; figures as base64 PNG data URIs or None)."""
    name, version, decision = (registration["model_name"], registration["version"],
                               registration["decision"])
    dataset = config.get("dataset", {})
    parts = [f"<h1>{_e(name)} v{_e(version)}</h1><p>Dataset: "
             f"{_e(dataset.get('description', '?'))} (digest <code>"
             f"{_e(str(dataset.get('digest', '?'))[:12])}</code>). {_e(origin)}</p>",
             _gate(decision), _quality(metrics, registration.get("labels")),
             "<h2>The ten AVVP numbers (Tables 2-5 columns)</h2>", _scores(scores),
             _config_diff(config, champion_config, decision.get("champion_version")),
             *(f"<h2>{_e(title)}</h2>" + ("<p>not produced by this run</p>" if data is None
                                          else f"<img alt='{_e(title)}' "
                                               f"src='data:image/png;base64,{data}'>")
               for title, data in figures.items())]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(name)} v"
            f"{_e(version)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, fmt: str = ".2f") -> str:  # the exact value in the tooltip
    return "n/a" if value is None else f"<span title='{value!r}'>{value:{fmt}}</span>"


def _table(header: list[str] | None, rows: list[list[str]], left: int = 1) -> str:
    """Rows of HTML cells (already escaped); the first `left` columns align left."""
    cell = lambda tag, i, x: f"<{tag}{' class=l' if i < left else ''}>{x}</{tag}>"  # noqa: E731
    lines = [[cell("th", i, _e(h)) for i, h in enumerate(header)]] if header else []
    lines += [[cell("td", i, x) for i, x in enumerate(row)] for row in rows]
    return "<table>" + "\n".join(f"<tr>{''.join(line)}</tr>" for line in lines) + "</table>"


def _gate(d: dict) -> str:
    verdict = ("<b class=ok>promoted to champion</b>" if d["promoted"]
               else "<b class=no>kept as candidate</b>")
    champion = ("none (first version)" if d.get("champion_version") is None else
                f"v{_e(d['champion_version'])}: {_num(d.get('champion_score'), '.3f')}")
    interval = ("" if d.get("low") is None else f" [{d['low']:+.3f}, {d['high']:+.3f}] at "
                f"{100 * d.get('confidence', 0.95):g}%")
    rows = [["metric", f"<code>{_e(d['metric'])}</code> on {_e(d.get('videos'))} val videos"],
            ["candidate", _num(d["candidate_score"], ".3f")], ["champion before", champion],
            ["improvement", "none" if d.get("improvement") is None
             else f"{d['improvement']:+.3f}{interval}"],
            ["rule", f"promote when the lower bound &gt; min_improvement "
                     f"{d.get('min_improvement', 0):g} ({_e(d.get('samples'))} resamples)"],
            ["reason", _e(d["reason"])]]
    return f"<h2>Promotion gate: {verdict}</h2>" + _table(None, rows, left=2)


def _quality(metrics: dict[str, float], choice: dict | None) -> str:
    """Table 1 columns: label quality on val before (PLG) and after PLD, the labels used."""
    choice = choice or {}
    made = choice.get("modalities", {})
    rows = [[_e(m)] + [_num(metrics.get(f"{stage}/val/{m}/{key}")) for stage in ("plg", "pld")
                       for key in QUALITY_KEYS]
            + [f"<b>{_e(made[m]['source'].upper())}</b>" if m in made else "?"]
            for m in ("audio", "visual")]
    header = ["modality"] + [f"{stage} {name}" for stage in ("PLG", "PLD")
                             for name in QUALITY_KEYS.values()] + ["trained on"]
    why = "".join(f"<li>{_e(m)}: {_e(c['reason'])}</li>" for m, c in made.items())
    return ("<h2>Pseudo-label quality on val (Table 1 columns)</h2>" + _table(header, rows)
            + f"<p>Why (<code>pld.apply={_e(choice.get('apply', '?'))}</code>):</p><ul>{why}</ul>")


def _scores(scores: dict) -> str:
    if not scores:
        return "<p>no scores recorded</p>"
    return _table(["split"] + [key.replace("_", " ") for key in SCORE_KEYS],
                  [[split] + [_num(scores[split].get(key)) for key in SCORE_KEYS]
                   for split in ("test", "val") if split in scores])


def _config_diff(config: dict, champion: dict | None, held: str | None) -> str:
    """The options (dotted) whose values differ from the champion's; `held` its version."""
    head = "<h2>Config diff to the champion it was compared with</h2>"
    if champion is None:
        return head + ("<p>first version: no champion to compare with</p>" if held is None
                       else f"<p>the config of v{_e(held)} is not available</p>")
    mine, theirs = _flat(config), _flat(champion)
    rows = [[f"<code>{_e(k)}</code>", _e(theirs.get(k, "-")), _e(mine.get(k, "-"))]
            for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]
    return head + (_table(["option", f"champion v{held}", "this version"], rows) if rows
                   else "<p>same config as the champion</p>")


def _flat(config: dict) -> dict:
    """The dotted options of a `config.json` as recorded (an older version's may not load
    as today's ExperimentConfig), plus the dataset digest."""
    flat = flatten(config.get("experiment", {}))
    return {**flat, "data.digest": config.get("dataset", {}).get("digest")}


def ui_link(experiment_id: str, run_id: str) -> str:
    """The report in the MLflow UI's artifact viewer (relative: works on any server)."""
    return (f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{REPORT_FILE}"
            f"?workflowType=machine_learning")


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
    client.update_model_version(name, version, description=f"{description}\n\n{note}".strip())
    return path


def open_report(model_uri: str, out: Path | None = None,
                tracking_uri: str | None = None) -> tuple[Path, str]:
    """Write the report of a registered version to `out` (default
    ./vaplan-report-<name>-v<version>.html); returns (path, "stored" or "rebuilt")."""
    try:
        name, alias, version = registry.parse_model_uri(model_uri)
    except ValueError as err:
        raise UserError(f"{err} (see vaplan report --help)") from None
    tracking.open_existing_store(tracking_uri, name, alias, version)
    found = registry.resolve_version(name, alias=alias, version=version)
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
