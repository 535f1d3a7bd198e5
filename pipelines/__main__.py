"""`python -m pipelines [OPTIONS]` = `vaplan run [OPTIONS]` (the tracked pipeline; `make demo`).

Kept as an alias: the same options, output and exit statuses (see `vaplan run --help`).
"""

from __future__ import annotations

import sys

from vaplan.cli import run_app

if __name__ == "__main__":
    sys.exit(run_app(["run", *sys.argv[1:]]))
