"""`python -m pipelines [OPTIONS]` = `vaplan run [OPTIONS]` (an alias: same options and exits)."""

from __future__ import annotations

import sys

from vaplan.cli import run_app

if __name__ == "__main__":
    sys.exit(run_app(["run", *sys.argv[1:]]))
