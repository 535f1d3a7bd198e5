"""Sweeps without Ray: search spaces in Tune's vocabulary checked by the one config validation,
the state a sweep resumes from, the base config and folder of a job, trial names, and the trials table and
description of a sweep. `ray_jobs` turns these into `tune.*` calls and MLflow runs (docs/ray.md).

A JSON/YAML file (optionally `{"space": {...}, "num_samples": 8}`) or `--space` items map
dotted options to `tune` domains: {"train.lr": {"loguniform": [1e-4, 1e-3]}, "pld.visual_k":
{"grid_search": [4, 5]}, "plg.visual_prompt": {"choice": ["VP1", "VP2"]}, "pld.visual": true}
(uniform, randint: hi exclusive, too); `--space k=a,b` is a grid, `k=kind:a,b` any kind,
`k=v` a constant. Every value and both ends of a range go through `vaplan.config.replace_path`
before Ray starts, so a bad one is refused with the message `--set` gives.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from vaplan.config import (PRESETS, ExperimentConfig, apply_overrides, configure, flatten,
                           from_dict, get_path, get_preset, replace_path)
from vaplan.errors import ConfigError, UserError
from vaplan.io import read_json, write_json
from vaplan.trial_groups import parse_gpus_per_trial

STATE_FILE = "vaplan_sweep.json"  # next to Tune's state: what --resume reads
KINDS = ("grid_search", "choice", "uniform", "loguniform", "randint")
RANGES = {"uniform": float, "loguniform": float, "randint": int}


class SpaceError(ConfigError):
    """An invalid search space (the message names the option and what is expected)."""


def parse_item(item: str) -> tuple[str, Any]:
    """`key=v1,v2` -> grid_search, `key=kind:a,b` -> {kind: [a, b]}, `key=v` -> constant."""
    key, sep, raw = (part.strip() for part in item.partition("="))
    kind, colon, rest = raw.partition(":")
    kind = kind if colon and kind in KINDS else ""
    values = [v.strip() for v in (rest if kind else raw).split(",") if v.strip()]
    if not sep or not key or not values:
        raise SpaceError(f"--space {item!r} must look like option=values, e.g. "
                         f"plg.visual_threshold=0.040,0.041 or train.lr=loguniform:1e-4,1e-3")
    if kind or len(values) > 1:
        return key, {kind or "grid_search": values}
    return key, values[0]


def load_file(path: str | Path) -> tuple[dict, int | None]:
    """A JSON or YAML space file -> (space, num_samples or None)."""
    import yaml  # JSON is YAML too

    try:
        data = yaml.safe_load(Path(path).read_text())
    except Exception as err:
        raise SpaceError(f"space file {path}: {' '.join(str(err).split())}") from None
    samples = data.get("num_samples") if isinstance(data, Mapping) else None
    data = data["space"] if isinstance(data, Mapping) and "space" in data else data
    if not isinstance(data, Mapping) or any(not isinstance(k, str) for k in data):
        raise SpaceError(f"space file {path}: expected a mapping of option -> domain")
    return dict(data), samples


def build_space(defaults: Mapping, file_space: Mapping | None, cli_items: Iterable[str],
                base: ExperimentConfig, sections: tuple[str, ...]) -> dict:
    """defaults < file < command line; every domain checked and typed by the config."""
    space = {**defaults, **(file_space or {}), **dict(map(parse_item, cli_items))}
    return {key: check(key, domain, base, sections) for key, domain in space.items()}


def check(key: str, domain: Any, base: ExperimentConfig, sections: tuple[str, ...]) -> Any:
    """The typed domain of option `key`, or SpaceError naming the option."""
    if not key.startswith(sections):
        raise SpaceError(f"search space option {key!r}: this sweep searches "
                         f"{', '.join(s + '*' for s in sections)} options only")
    if not isinstance(domain, Mapping):
        return typed(base, key, domain)
    (kind, values), = domain.items() if len(domain) == 1 else [(None, None)]
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if kind not in KINDS or not values or (kind in RANGES and len(values) != 2):
        raise SpaceError(f"search space option {key}: expected one domain of {list(KINDS)} "
                         f"(two bounds lo,hi for a range), got {dict(domain)}")
    exclusive = kind == "randint" and str(values[1]).lstrip("-").isdigit()
    if exclusive:  # Tune's randint never draws hi: check the largest value drawn, hi - 1
        values[1] = int(str(values[1])) - 1
    values = [typed(base, key, v) for v in values]
    if exclusive:
        values[1] += 1
    if kind in RANGES and (type(values[0]) is not RANGES[kind] or not values[0] < values[1]
                           or (kind == "loguniform" and values[0] <= 0)):
        raise SpaceError(f"search space option {key}: {kind} needs lo < hi"
                         f"{' (lo > 0)' if kind == 'loguniform' else ''} of a"
                         f"{'n integer' if kind == 'randint' else ' float'} option, got {values}")
    return {kind: values}


def typed(base: ExperimentConfig, key: str, value: Any) -> Any:
    """The value as the config holds it (strings parsed), refused as `--set` refuses it."""
    try:
        return get_path(replace_path(base, key, value), key)
    except ConfigError as err:
        raise SpaceError(str(err)) from None


def searched(space: Mapping) -> list[str]:
    """The options that vary between trials."""
    return [key for key, domain in space.items() if isinstance(domain, Mapping)]


def dotted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config with dotted keys ({"pld": {"visual_k": 5}} -> {"pld.visual_k": 5});
    numpy scalars as Python values."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in flatten(dict(config)).items()}


def apply_config(base: ExperimentConfig, config: Mapping[str, Any]) -> ExperimentConfig:
    """The base experiment with a trial's values applied (each checked by the config)."""
    for key, value in dotted(config).items():
        base = replace_path(base, key, value)
    return base


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """Our metrics in a Tune result (their names hold a "/"; Tune's own fields do not)."""
    return {k: float(v) for k, v in result.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def trial_name(values: Mapping[str, Any], keys: Iterable[str], trial_id: str = "") -> str:
    """A trial's run name: its searched values (4 significant digits), then its number."""
    shown = [f"{k.split('.', 1)[-1]}={f'{v:.4g}' if isinstance(v, float) else v}"
             for k, v in values.items() if k.startswith(tuple(keys))]
    return " ".join([*shown, trial_id.rsplit("_", 1)[-1]]).strip()


@dataclass
class SweepState:
    """A planned sweep; <storage>/<name>/vaplan_sweep.json once its parent run exists."""

    job: str
    name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    base: dict
    space: dict
    num_samples: int
    finished: bool = False
    best: dict = field(default_factory=dict)
    task: str = "avvp"  # "ave": `base` is an AveExperimentConfig (docs/ave.md); older files: avvp

    def save(self, folder: Path) -> None:
        write_json(folder / STATE_FILE, self.__dict__)

    @classmethod
    def load(cls, folder: Path) -> "SweepState":
        return cls(**read_json(folder / STATE_FILE))

    @property
    def experiment(self) -> ExperimentConfig:
        if self.task == "ave":
            from vaplan.ave.config import AveExperimentConfig  # lazy: torch

            return from_dict(AveExperimentConfig, self.base)
        return from_dict(ExperimentConfig, self.base)

    def dataset(self):
        """The experiment's dataset: LLP's (`load_dataset`), AVE-sim for AVE (docs/ave.md)."""
        if self.task == "ave":
            from vaplan.ave.experiment import load_data

            return load_data(self.experiment)
        from vaplan.data.dataset import load_dataset

        return load_dataset(self.experiment.data)

    @property
    def winner(self) -> ExperimentConfig:
        """The base experiment with the best trial's values applied."""
        return apply_config(self.experiment, self.best.get("best", {}))


def trials_table(rows: Iterable[tuple[Mapping, bool, Mapping]], keys: Iterable[str],
                 metric: str) -> pd.DataFrame:
    """One row per trial (config values, failed?, metrics): the searched values, status, the
    objective `metric`, the other metrics; 4 significant digits, best first."""
    keys, rounded = tuple(keys), lambda v: float(f"{v:.4g}") if type(v) is float else v
    table = pd.DataFrame([{k: rounded(v) for k, v in {
        **{k: v for k, v in dotted(config).items() if k.startswith(keys)},
        "status": "FAILED" if failed else "FINISHED",
        **dict(sorted(metrics_of(metrics).items(), key=lambda kv: kv[0] != metric))}.items()}
        for config, failed, metrics in rows])
    return table.sort_values(metric, ascending=False).reset_index(drop=True) \
        if metric in table else table


def sweep_description(job: str, preset: str, space: Mapping, best: Mapping, trials: int,
                      failed: int, seconds: float, metric: str, best_link: str,
                      ui_note: str = "") -> str:
    """The markdown description of a sweep's parent run: counts, the objective, the best trial
    (linked) and, per searched option, its domain and the winning value."""
    keys = searched(space)
    values = best.get("best", {})
    return "\n".join([
        f"**{job}** ({preset}): {trials} trials ({failed} failed) in {seconds:.0f} s, "
        f"objective `{metric}` (higher is better).", "",
        f"**Best trial:** [{trial_name(values, keys) or best.get('run_id')}]({best_link}): "
        f"`{metric}` = {best.get('metrics', {}).get(metric, math.nan):.4g}", "",
        "| option | searched | best |", "| --- | --- | --- |",
        *[f"| `{k}` | {json.dumps(space[k])} | {values.get(k)} |" for k in keys],
        "", "All trials, best first: artifact `trials.json`; the space: `search_space.json`.",
        *(["", ui_note] if ui_note else [])])


def is_ave(preset: str) -> bool:
    """Whether `preset` is an AVE preset (docs/ave.md), without importing torch for LLP's."""
    if preset in PRESETS:
        return False
    from vaplan.ave.config import is_ave_preset  # lazy: torch

    return is_ave_preset(preset)


def base_experiment(opts, spec) -> ExperimentConfig:
    """Preset + --set with the backbone's and label source's recipes on the options no --set
    names (`vaplan.config.configure`), + device and threads for training trials; ConfigError
    if bad. An AVE preset: `ave_experiment`, for an AVE spec (`spec.task`) only, else UserError
    (AVE sweeps PLG's thresholds only: docs/ave.md)."""
    if is_ave(opts.preset):
        what = "--per-class" if getattr(opts, "per_class", False) else (
            None if spec.task == "ave" else f"the {spec.job} sweep")
        if what:
            raise UserError(f"--preset {opts.preset} is an AVE preset: AVE sweeps only PLG's "
                            f"visual/audio thresholds (vaplan sweep plg), not {what}")
        from vaplan.ave.config import ave_experiment

        return ave_experiment(opts.preset, list(opts.overrides))
    base = configure(get_preset(opts.preset), list(opts.overrides))
    if spec.trains:  # --gpus-per-trial auto: the device follows in ray_jobs.common
        gpus = parse_gpus_per_trial(opts.gpus_per_trial)
        base = apply_overrides(base, [
            f"train.device={'cuda' if gpus else base.train.device}",
            f"train.num_threads={max(1, int(opts.cpus_per_trial))}"])
    return base


def sweep_folder(job: str, opts) -> Path:
    """<storage>/<--name>, on --resume the newest `<job>-<preset>-*`, else a new name."""
    root = Path(opts.storage_path or Path.home() / "ray_results").expanduser().resolve()
    prefix = f"{job}-{opts.preset}-"
    if opts.name or not opts.resume:
        return root / (opts.name or prefix + time.strftime("%Y%m%d-%H%M%S"))
    found = sorted((p for p in root.glob(prefix + "*") if (p / STATE_FILE).is_file()
                    or any(p.glob(f"*/{STATE_FILE}"))), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"--resume: no {prefix}* sweep under {root}; pass --name")
    return found[-1]
