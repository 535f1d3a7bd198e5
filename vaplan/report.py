"""What the pipeline shows people, as text: the HTML report of a registered version, the
markdown of run and version descriptions, the per-class table (pure: dicts and arrays in,
strings and DataFrames out; every HTML value escaped).

    render(registration, config, champion_config, metrics, scores, figures, origin) -> HTML
    results_markdown(scores, quality, choice)   the ten scores, label quality and choice
    run_description(name, preset, overrides, ...) a pipeline parent run's description
    per_class_table(val, plg, pld, pred_audio, pred_visual) -> DataFrame (Fig. 3 numbers)
    flat_scores({"val": {"seg_type": x}}) -> {"val/seg_type": x}

The pipeline (pipelines/report.py) gathers the inputs from the MLflow store; docs/pipelines.md.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from vaplan.categories import CLASSES
from vaplan.config import flatten
from vaplan.data.types import PseudoLabels, SplitData
from vaplan.metrics import SCORE_KEYS, per_class_f

QUALITY_KEYS = {"video_precision": "video prec.", "seg": "seg F", "event": "event F",
                "average": "average"}
STYLE = ("body{font:14px/1.45 system-ui,sans-serif;max-width:1180px;margin:24px auto;color:"
         "#212529}table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid "
         "#dee2e6;padding:4px 9px;text-align:right}th{background:#f1f3f5}.l{text-align:left}"
         ".ok{color:#2b8a3e}.no{color:#c92a2a}img{max-width:100%}code{background:#f1f3f5}")


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


def flat_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"val": {"seg_type": x}} -> {"val/seg_type": x}."""
    return {f"{split}/{key}": float(value) for split, values in scores.items()
            for key, value in values.items()}


def results_markdown(scores: dict[str, dict[str, float]], quality: dict[str, float],
                     choice: dict) -> str:
    """Markdown for a version's and a parent run's description: the ten scores on val and
    test, the pseudo-label quality on val before/after PLD, which labels retrain used and why."""
    lines = ["**Scores** (percent, official AVVP protocol)", "",
             "| split | " + " | ".join(SCORE_KEYS) + " |",
             "| --- |" + " ---: |" * len(SCORE_KEYS)]
    lines += [f"| {split} | " + " | ".join(_cell(scores[split].get(key)) for key in SCORE_KEYS)
              + " |" for split in ("val", "test") if split in scores]
    lines += ["", "**Pseudo labels on val** (label quality = (seg F + event F) / 2)", "",
              "| modality | PLG | PLD | trained on | why |", "| --- | ---: | ---: | --- | --- |"]
    for modality, made in choice["modalities"].items():
        plg, pld = (quality.get(f"{stage}/val/{modality}/average") for stage in ("plg", "pld"))
        lines.append(f"| {modality} | {_cell(plg)} | {_cell(pld)} | "
                     f"**{made['source'].upper()}** | {made['reason']} |")
    lines += ["", f"Labels it was trained on: `pld.apply={choice['apply']}`."]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run_description(name: str, preset: str, overrides: tuple[str, ...], dataset: str,
                    digest: str, model_name: str, registration: dict | None,
                    results: str | None) -> str:
    """A pipeline parent run's description: what ran on which dataset, then the registered
    version's description (gate, scores, labels) or, without a registration, `results`."""
    lines = [f"**{name}**: preset `{preset or '-'}`"
             + (f", overrides `{' '.join(overrides)}`" if overrides else "")
             + f"; dataset {dataset} (digest `{digest[:12]}`)", ""]
    if registration is None:
        return "\n".join([*lines, results or ""])
    version = registration["version"]
    return "\n".join([*lines, f"Registered as **{model_name} v{version}** "
                               f"(`models:/{model_name}/{version}`).", "",
                       registration["description"]])


def per_class_table(val: SplitData, plg: PseudoLabels, pld: PseudoLabels,
                    pred_audio: np.ndarray, pred_visual: np.ndarray) -> pd.DataFrame:
    """Per-class event-level F (percent) on val of PLG, PLD and the model's (N,T,C) events,
    per modality."""
    table = {"class": list(CLASSES),
             "val_videos_audio": val.gt_audio.max(axis=1).sum(axis=0).astype(int),
             "val_videos_visual": val.gt_visual.max(axis=1).sum(axis=0).astype(int)}
    for name, audio, visual in (("plg", plg.seg_audio, plg.seg_visual),
                                ("pld", pld.seg_audio, pld.seg_visual),
                                ("model", pred_audio, pred_visual)):
        table[f"{name}_audio_event_f"] = per_class_f(audio, val.gt_audio)
        table[f"{name}_visual_event_f"] = per_class_f(visual, val.gt_visual)
    return pd.DataFrame(table).round(3)
