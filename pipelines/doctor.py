"""`vaplan doctor`'s tracking-store check, creating nothing: an existing store (or server) is
asked for one experiment. The other service checks are `vaplan.services`, the data checks
`vaplan.doctor`."""

from __future__ import annotations

import os
from unittest import mock

from vaplan.doctor import Check
from vaplan.services import QUICK_HTTP, check_ray, new_sqlite_store
from vaplan.store_uri import resolve_tracking_uri, sqlite_path


def check_tracking(uri: str | None = None) -> Check:
    """Can `vaplan run` use the tracking store (`--tracking-uri`, MLFLOW_TRACKING_URI, default)?"""
    from mlflow import MlflowClient

    resolved = resolve_tracking_uri(uri)
    new = new_sqlite_store(resolved)
    if new is not None:
        return new
    db = sqlite_path(resolved)
    what = resolved if db is None else f"SQLite {db}"
    quick = {name: value for name, value in QUICK_HTTP.items() if not os.environ.get(name)}
    try:
        with mock.patch.dict(os.environ, quick):  # the user's own settings win; restored after
            found = MlflowClient(tracking_uri=resolved).search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure: the run cannot use this store
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return Check("tracking store", "fail", f"{what}: not reachable ({first})")
    return Check("tracking store", "ok", f"{what}: reachable ({len(found)} experiment(s) listed)")


def check_services(tracking_uri: str | None = None, sweep: bool = False) -> list[Check]:
    """The tracking store, plus Ray when the run is a sweep."""
    return [check_tracking(tracking_uri), *([check_ray()] if sweep else [])]
