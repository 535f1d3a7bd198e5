"""Ray Tune throughput on this machine: tune_plg trials per minute, and tune_train wall time for
the same trials run one at a time vs concurrently on the same CPUs (printed side by side).

    python benchmarks/bench_tune.py                       # sim-small, 200 PLG trials, 8 x 2 epochs
    python benchmarks/bench_tune.py --preset sim-tiny --plg-trials 40 --train-trials 4 \
        --epochs 1 --hidden-dim 64                         # shrink for a quick look
    python benchmarks/bench_tune.py --gpus 1 --gpu-fractions 1,0.25   # on a GPU machine

Sequential: max_concurrent=1 with --cpus trials' worth of torch threads; concurrent: each trial
1 CPU (1 thread), as many at once as the local Ray has CPUs. ASHA is off so both do the same
work. Everything is logged to a throw-away MLflow SQLite store (like a real sweep).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sim-small")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--plg-trials", type=int, default=200, help="0 skips tune_plg")
    parser.add_argument("--train-trials", type=int, default=8, help="0 skips tune_train")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=512, help="HAN width (512 = paper)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs of the local Ray")
    parser.add_argument("--gpu-fractions", default="1,0.25",
                        help="GPU share per trial to compare (with --gpus)")
    parser.add_argument("--train-modes", default="sequential,concurrent",
                        help="which tune_train runs, in this order")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    return parser.parse_args(argv)


def plg_values(count: int) -> list[str]:
    """A PLG grid of about `count` trials (visual thresholds x the 8 prompt pairs)."""
    per_prompt = max(1, count // 8)
    return [f"{0.030 + 0.020 * i / max(per_prompt - 1, 1):.5f}" for i in range(per_prompt)]


def sweep(spec, opts, data):
    from ray_jobs.runner import plan_sweep, run_sweep

    plan = plan_sweep(spec, opts)
    outcome = run_sweep(plan, opts, lambda *_: data, echo=lambda _: None)
    return outcome, plan.trials_planned


def main(argv=None) -> int:
    args = parse_args(argv)
    from ray_jobs import common, jobs, tune_plg, tune_train
    from ray_jobs.sweep import SweepOptions, base_experiment

    tmp = Path(tempfile.mkdtemp(prefix="vaplan-bench-tune-"))
    base = SweepOptions(preset=args.preset, tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                        storage_path=str(tmp / "ray"), quiet=True, address="local",
                        num_cpus=args.cpus)
    model = [f"train.model.hidden_dim={args.hidden_dim}", f"train.model.ffn_dim={args.hidden_dim}",
             f"train.epochs={args.epochs}"]
    dataset = jobs.load_dataset(base_experiment(base).data)
    if args.gpus:
        import ray

        ray.init(num_cpus=args.cpus, num_gpus=args.gpus, include_dashboard=False)
    else:
        common.init_ray("local", num_cpus=args.cpus, quiet=True)
    numbers = {"machine": f"{os.cpu_count()} CPUs (local Ray num_cpus={args.cpus})",
               "preset": args.preset, "dataset": dataset.description}
    try:
        shared = jobs.share_dataset(dataset)
        data = {"dataset": shared}
        if args.plg_trials:
            opts = dataclasses.replace(base, name="plg", space=[
                "plg.visual_threshold=" + ",".join(plg_values(args.plg_trials)),
                "plg.visual_prompt=VP1,VP2,VP3,VP4", "plg.audio_prompt=AP1,AP2",
                "plg.audio_threshold=0.038"])
            outcome, trials = sweep(tune_plg.SPEC, opts, data)
            numbers["tune_plg"] = {"trials": trials, "seconds": round(outcome.seconds, 1),
                                   "trials_per_minute": round(60 * trials / outcome.seconds, 1)}
        if args.train_trials:
            numbers["tune_train"] = bench_train(args, base, model, data, tune_train)
    finally:
        common.shutdown_ray()
    print_table(numbers)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2))
    return 0


def bench_train(args, base, model, data, tune_train) -> dict:
    """The same trials sequentially and concurrently (and per GPU share with --gpus)."""
    space = ["train.loss.variant=richness", "train.lr=3e-4", "train.loss.richness_weight=0.5",
             "train.loss.use_category_richness=true", "train.loss.use_segment_richness=true",
             "train.seed=" + ",".join(str(i) for i in range(args.train_trials))]
    spec = dataclasses.replace(tune_train.SPEC, sections=("train.",))
    known = {"sequential": dict(max_concurrent=1, cpus_per_trial=float(args.cpus)),
             "concurrent": dict(max_concurrent=0, cpus_per_trial=1.0)}
    modes = {mode: known[mode] for mode in args.train_modes.split(",")}
    if args.gpus:
        modes = {f"gpu {share}": dict(max_concurrent=0, cpus_per_trial=1.0,
                                      gpus_per_trial=float(share))
                 for share in args.gpu_fractions.split(",")}
    results = {}
    for mode, extra in modes.items():
        opts = dataclasses.replace(base, name=f"train-{mode.replace(' ', '-')}", space=space,
                                   num_samples=1,
                                   overrides=model, asha=False, **extra)
        started = time.perf_counter()
        outcome, trials = sweep(spec, opts, data)
        wall = time.perf_counter() - started
        results[mode] = {"trials": trials, "wall_seconds": round(wall, 1),
                         "trials_per_hour": round(3600 * trials / wall, 1),
                         "best_val_seg_type": round(outcome.best_metrics.get("objective", 0), 2)}
    return results


def print_table(numbers: dict) -> None:
    print(f"\nmachine: {numbers['machine']}; preset {numbers['preset']}")
    if "tune_plg" in numbers:
        plg = numbers["tune_plg"]
        print(f"tune_plg: {plg['trials']} trials in {plg['seconds']}s = "
              f"{plg['trials_per_minute']} trials/minute")
    if "tune_train" in numbers:
        print(f"{'tune_train':<14}{'trials':>8}{'wall s':>10}{'trials/h':>10}{'best seg_type':>15}")
        for mode, row in numbers["tune_train"].items():
            print(f"{mode:<14}{row['trials']:>8}{row['wall_seconds']:>10}"
                  f"{row['trials_per_hour']:>10}{row['best_val_seg_type']:>15}")


if __name__ == "__main__":
    sys.exit(main())
