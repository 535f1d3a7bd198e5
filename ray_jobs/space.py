"""Search spaces in Tune's own vocabulary, checked by the one config validation.

A JSON/YAML file (optionally `{"space": {...}, "num_samples": 8}`) or `--space` items map
dotted options to `tune` domains: {"train.lr": {"loguniform": [1e-4, 1e-3]}, "pld.visual_k":
{"grid_search": [4, 5]}, "plg.visual_prompt": {"choice": ["VP1", "VP2"]}, "pld.visual": true}
(uniform, randint: hi exclusive, too); `--space k=a,b` is a grid, `k=kind:a,b` any kind,
`k=v` a constant. Every value and both ends of a range go through `vaplan.config.replace_path`
before Ray starts, so a bad one is refused with the message `--set` gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from vaplan.config import ExperimentConfig, get_path, replace_path
from vaplan.errors import ConfigError

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


def param_space(space: Mapping) -> dict:
    """Tune's param_space: each {kind: values} becomes `tune.<kind>(...)`."""
    from ray import tune

    params = dict(space)
    for key in searched(space):
        (kind, values), = space[key].items()
        params[key] = getattr(tune, kind)(*values) if kind in RANGES else \
            getattr(tune, kind)(list(values))
    return params


def searched(space: Mapping) -> list[str]:
    """The options that vary between trials."""
    return [key for key, domain in space.items() if isinstance(domain, Mapping)]

