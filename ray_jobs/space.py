"""Search spaces: parsing (command line and JSON/YAML files), validation, Tune domains.

A space maps a dotted config option ("plg.visual_threshold") to a `Dimension`:
  grid     every value is tried (Tune grid_search; multiplies --num-samples)
  choice   one value drawn per sample
  uniform / loguniform   a float drawn from [lo, hi]
  randint  an int drawn from [lo, hi] (inclusive)
  fixed    one value (same as `--set`, but recorded in the space)

Command line: `--space plg.visual_threshold=0.040,0.041,0.042` (a grid),
`--space train.lr=loguniform:1e-4,1e-3`, `--space train.loss.variant=choice:richness,naive`.
File (`--space-file x.yaml|x.json`): {"plg.visual_threshold": [0.040, 0.041],
"train.lr": {"loguniform": [1e-4, 1e-3]}, "pld.visual_k": 5} or {"space": {...},
"num_samples": 8}. Every value (grid/choice/fixed values, both bounds of a range) is checked
by building the config with it (`vaplan.config.replace_path`, the one validation `--set` also
goes through), before Ray starts: a bad value is refused with the same message as `--set`.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from vaplan.config import ExperimentConfig, get_path, replace_path
from vaplan.errors import ConfigError

KINDS = ("grid", "choice", "uniform", "loguniform", "randint", "fixed")
RANGE_KINDS = ("uniform", "loguniform", "randint")


class SpaceError(ConfigError):
    """An invalid search space (the message names the option and the expected values)."""


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted config option, e.g. "plg.visual_threshold"
    kind: str  # one of KINDS
    values: tuple  # grid/choice/fixed values, or (lo, hi) for the range kinds

    def to_dict(self) -> dict:
        return {"kind": self.kind, "values": list(self.values)}

    def size(self) -> int | None:
        """Number of distinct values (None for continuous ranges)."""
        if self.kind in ("grid", "choice"):
            return len(self.values)
        if self.kind == "fixed":
            return 1
        if self.kind == "randint":
            return int(self.values[1]) - int(self.values[0]) + 1
        return None


Space = dict[str, Dimension]


def _split_values(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_cli_dimension(item: str) -> Dimension:
    """"key=v1,v2" (grid), "key=kind:v1,v2", "key=value" (fixed) -> raw (string) Dimension."""
    if "=" not in item:
        raise SpaceError(f"--space {item!r} must look like section.option=values "
                         f"(e.g. plg.visual_threshold=0.040,0.041 or train.lr=loguniform:1e-4,1e-3)")
    key, raw = (part.strip() for part in item.split("=", 1))
    kind, _, rest = raw.partition(":")
    if rest and kind in KINDS:
        return Dimension(key, kind, tuple(_split_values(rest)))
    values = _split_values(raw)
    if not values:
        raise SpaceError(f"--space {key}: no values given")
    return Dimension(key, "fixed" if len(values) == 1 else "grid", tuple(values))


def _file_dimension(key: str, spec: Any) -> Dimension:
    if isinstance(spec, Mapping):
        if len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise SpaceError(f"space file option {key}: expected one of {list(KINDS)} as the "
                             f"only key, got {sorted(spec)}")
        kind, values = next(iter(spec.items()))
        values = values if isinstance(values, (list, tuple)) else [values]
        return Dimension(key, kind, tuple(values))
    if isinstance(spec, (list, tuple)):
        return Dimension(key, "grid", tuple(spec))
    return Dimension(key, "fixed", (spec,))


def load_space_file(path: str | Path) -> tuple[Space, dict]:
    """Read a JSON or YAML space file -> (raw space, extra settings such as num_samples)."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"space file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        raise SpaceError(f"space file {path} is not valid {path.suffix or 'JSON'}: {err}") from None
    if not isinstance(data, Mapping):
        raise SpaceError(f"space file {path}: expected a mapping of option -> values")
    extra = {}
    if "space" in data:
        extra = {k: v for k, v in data.items() if k != "space"}
        unknown = set(extra) - {"num_samples"}
        if unknown:
            raise SpaceError(f"space file {path}: unknown keys {sorted(unknown)}; "
                             f"expected 'space' and optionally 'num_samples'")
        data = data["space"]
    return {key: _file_dimension(key, spec) for key, spec in data.items()}, extra


def build_space(defaults: Space, file_space: Space | None, cli_items: Iterable[str],
                base: ExperimentConfig, sections: tuple[str, ...]) -> Space:
    """defaults < file < command line; then every dimension is typed and validated."""
    space = dict(defaults)
    space.update(file_space or {})
    for item in cli_items:
        dim = parse_cli_dimension(item)
        space[dim.key] = dim
    return {key: validate_dimension(dim, base, sections) for key, dim in space.items()}


def validate_dimension(dim: Dimension, base: ExperimentConfig,
                       sections: tuple[str, ...]) -> Dimension:
    """Type and check every value through vaplan.config; returns the typed copy."""
    key = dim.key
    if not key.startswith(sections):
        raise SpaceError(f"search space option {key!r}: this sweep searches "
                         f"{', '.join(s + '*' for s in sections)} options only")
    if dim.kind not in KINDS:
        raise SpaceError(f"search space option {key}: unknown kind {dim.kind!r}; "
                         f"expected one of {list(KINDS)}")
    if not dim.values:
        raise SpaceError(f"search space option {key}: no values given")
    if dim.kind in RANGE_KINDS and len(dim.values) != 2:
        raise SpaceError(f"search space option {key}: {dim.kind} needs exactly two bounds "
                         f"lo,hi; got {list(dim.values)}")
    if dim.kind == "fixed" and len(dim.values) != 1:
        raise SpaceError(f"search space option {key}: fixed takes one value")
    typed = tuple(_typed_value(base, key, value) for value in dim.values)
    if dim.kind in RANGE_KINDS:
        _check_range(key, dim.kind, typed, _field_type(base, key))
    return Dimension(key, dim.kind, typed)


def _field_type(base: ExperimentConfig, key: str) -> Any:
    """The annotated type of a dotted option (after checking that the option exists)."""
    owner = base
    *parents, name = key.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return typing.get_type_hints(type(owner))[name]


def _typed_value(base: ExperimentConfig, key: str, value: Any) -> Any:
    """The value as the config builds it (CLI strings parsed); refused as `--set` refuses it."""
    try:
        return get_path(replace_path(base, key, value), key)
    except ConfigError as err:
        raise SpaceError(str(err)) from None


def _check_range(key: str, kind: str, bounds: tuple, hint: Any) -> None:
    lo, hi = bounds
    if kind == "randint" and hint is not int:
        raise SpaceError(f"search space option {key}: randint needs an integer option")
    if kind != "randint" and hint is not float:
        raise SpaceError(f"search space option {key}: {kind} needs a float option "
                         f"(use randint or a grid for integers)")
    if not lo < hi:
        raise SpaceError(f"search space option {key}: {kind} needs lo < hi, got {lo}, {hi}")
    if kind == "loguniform" and lo <= 0:
        raise SpaceError(f"search space option {key}: loguniform needs lo > 0, got {lo}")


def to_param_space(space: Space, seed_key: str | None = None) -> dict[str, Any]:
    """Tune's param_space: flat dotted keys -> grid_search / choice / distributions."""
    from ray import tune

    params: dict[str, Any] = {}
    for key, dim in sorted(space.items()):
        values = list(dim.values)
        if dim.kind == "grid":
            params[key] = tune.grid_search(values)
        elif dim.kind == "choice":
            params[key] = tune.choice(values)
        elif dim.kind == "uniform":
            params[key] = tune.uniform(*values)
        elif dim.kind == "loguniform":
            params[key] = tune.loguniform(*values)
        elif dim.kind == "randint":
            params[key] = tune.randint(values[0], values[1] + 1)  # inclusive upper bound
        else:
            params[key] = values[0]
    return params


def space_to_dict(space: Space) -> dict[str, dict]:
    return {key: dim.to_dict() for key, dim in sorted(space.items())}


def space_from_dict(data: Mapping[str, Mapping]) -> Space:
    return {key: Dimension(key, spec["kind"], tuple(spec["values"])) for key, spec in data.items()}


def grid_size(space: Space) -> int:
    """Trials per sample from the grid dimensions (Tune multiplies grids by num_samples)."""
    size = 1
    for dim in space.values():
        if dim.kind == "grid":
            size *= len(dim.values)
    return size


def describe(space: Space) -> str:
    """One line per dimension, for logs and the parent run's description."""
    return "\n".join(f"{key}: {dim.kind} {list(dim.values)}" for key, dim in sorted(space.items()))
