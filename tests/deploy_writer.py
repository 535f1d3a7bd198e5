"""One trial process for the deployment tests (tests/test_deploy_postgres.py).

Each process plays a tuning trial through the project's MLflow wiring (pipelines.tracking):
it opens a child run under a parent run that the driver created, then logs a known series of
scores so the test can count every point afterwards.

    python tests/deploy_writer.py --uri URI --experiment-id ID --parent-run-id RID \
        --trial N --steps S

Prints ``RUN_ID=<id>`` as its last line.
"""

from __future__ import annotations

import argparse
import sys

SCORE_KEYS = ("seg_a", "seg_v", "seg_av", "seg_type")  # logged each step as val/<key>
PREFIX = "val"


def expected_scores(trial: int, step: int) -> dict[str, float]:
    """The scores trial `trial` logs at `step`: distinct per trial, step and key."""
    return {key: trial * 100.0 + step + k / 10.0 for k, key in enumerate(SCORE_KEYS)}


def write_trial(uri: str, experiment_id: str, parent_run_id: str, trial: int, steps: int) -> str:
    """Log `steps` steps of SCORE_KEYS to a new child run; return its run id."""
    from pipelines import tracking

    tracking.use_tracking_uri(uri)
    name = f"trial-{trial:02d}"
    with tracking.start_child_run(parent_run_id, experiment_id, run_name=name) as run:
        tracking.log_flat_params({"trial": trial, "steps": steps})
        for step in range(steps):
            tracking.log_scores(expected_scores(trial, step), prefix=f"{PREFIX}/", step=step)
        return run.info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--experiment-id", required=True)
    parser.add_argument("--parent-run-id", required=True)
    parser.add_argument("--trial", type=int, required=True)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    run_id = write_trial(args.uri, args.experiment_id, args.parent_run_id, args.trial, args.steps)
    print(f"RUN_ID={run_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
