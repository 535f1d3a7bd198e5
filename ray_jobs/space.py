"""A checked search space (`vaplan.sweeps`: Tune's vocabulary, validated by the config) as
Tune's param_space: each {kind: values} becomes `tune.<kind>(...)`."""

from __future__ import annotations

from typing import Mapping

from vaplan.sweeps import RANGES, SpaceError, build_space, load_file, searched  # noqa: F401


def param_space(space: Mapping) -> dict:
    """Tune's param_space of a checked space (constants stay as they are)."""
    from ray import tune

    params = dict(space)
    for key in searched(space):
        (kind, values), = space[key].items()
        params[key] = getattr(tune, kind)(*values) if kind in RANGES else \
            getattr(tune, kind)(list(values))
    return params
