"""Ray Tune throughput on this machine: tune_plg trials per minute, and tune_train wall time for
the same trials run one at a time vs concurrently on the same CPUs (printed side by side).

    python benchmarks/bench_tune.py                       # sim-small, 200 PLG trials, 8 x 2 epochs
    python benchmarks/bench_tune.py --preset sim-tiny --plg-trials 40 --train-trials 4 \
        --epochs 1 --hidden-dim 64                         # shrink for a quick look
    python benchmarks/bench_tune.py --gpus 1 --gpu-fractions 1,0.25   # on a GPU machine

Sequential: max_concurrent=1 with --cpus trials' worth of torch threads; concurrent: each trial
1 CPU (1 thread), as many at once as the local Ray has CPUs. ASHA is off so both do the same
work. The trials are logged by the driver to a throw-away MLflow SQLite store (like a real
sweep); the time includes that.
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


def sweep(spec, args: list[str], data: dict, name: str, extra: list[str] | None = None):
    """Run one sweep (quiet, in the running Ray); returns (seconds, trials, best objective)."""
    from ray_jobs import sweep as sweeps
    from vaplan.sweep_options import add_asha_args, parser as sweep_parser, plan
    from vaplan.sweeps import sweep_folder

    parser = sweep_parser(spec, "bench")
    add_asha_args(parser)
    opts = parser.parse_args([*args, "--name", name, *(extra or [])])
    folder = sweep_folder(spec.job, opts)
    state = plan(spec, opts, folder)
    started = time.perf_counter()
    state = sweeps.run_sweep(spec, opts, state, folder, lambda s: data)
    seconds = time.perf_counter() - started
    trials = len(list(folder.glob("run_trial_*")))
    return seconds, trials, state.best.get("metrics", {}).get(spec.objective, 0.0)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ray_jobs import common, sweep as sweeps, tune_plg, tune_train
    from vaplan.config import get_preset
    from vaplan.method import make_pseudo_labels

    tmp = Path(tempfile.mkdtemp(prefix="vaplan-bench-tune-"))
    base = ["--preset", args.preset, "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
            "--storage-path", str(tmp / "ray")]
    model = ["--set", f"train.model.hidden_dim={args.hidden_dim}",
             "--set", f"train.model.ffn_dim={args.hidden_dim}", "--set", f"train.epochs={args.epochs}"]
    dataset = sweeps.load_dataset(get_preset(args.preset).data)
    if args.gpus:
        import ray

        ray.init(num_cpus=args.cpus, num_gpus=args.gpus, include_dashboard=False)
    else:
        common.init_ray("local", num_cpus=args.cpus)
    numbers = {"machine": f"{os.cpu_count()} CPUs (local Ray num_cpus={args.cpus})",
               "preset": args.preset, "dataset": dataset.description}
    try:
        if args.plg_trials:
            space = ["--space", "plg.visual_threshold=" + ",".join(plg_values(args.plg_trials)),
                     "--space", "plg.visual_prompt=VP1,VP2,VP3,VP4",
                     "--space", "plg.audio_prompt=AP1,AP2", "--space", "plg.audio_threshold=0.038"]
            seconds, trials, _ = sweep(tune_plg.SPEC, base + space, {"dataset": dataset}, "plg")
            numbers["tune_plg"] = {"trials": trials, "seconds": round(seconds, 1),
                                   "trials_per_minute": round(60 * trials / seconds, 1)}
        if args.train_trials:
            labels = make_pseudo_labels(dataset, "train", get_preset(args.preset).plg)
            numbers["tune_train"] = bench_train(args, base + model, {"dataset": dataset,
                                                                     "labels": labels},
                                                tune_train)
    finally:
        import ray

        ray.shutdown()
    print_table(numbers)
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2))
    return 0


def bench_train(args, base: list[str], data: dict, tune_train) -> dict:
    """The same trials sequentially and concurrently (and per GPU share with --gpus)."""
    space = ["train.loss.variant=richness", "train.lr=3e-4", "train.loss.richness_weight=0.5",
             "train.loss.use_category_richness=true", "train.loss.use_segment_richness=true",
             "train.seed=" + ",".join(str(i) for i in range(args.train_trials))]
    spec = dataclasses.replace(tune_train.SPEC, sections=("train.",))
    known = {"sequential": ["--max-concurrent", "1", "--cpus-per-trial", str(float(args.cpus))],
             "concurrent": ["--max-concurrent", "0", "--cpus-per-trial", "1"]}
    modes = {mode: known[mode] for mode in args.train_modes.split(",")}
    if args.gpus:
        modes = {f"gpu {share}": ["--cpus-per-trial", "1", "--gpus-per-trial", share]
                 for share in args.gpu_fractions.split(",")}
    results = {}
    for mode, extra in modes.items():
        flags = [*extra, "--num-samples", "1", "--no-asha",
                 *[item for value in space for item in ("--space", value)]]
        wall, trials, best = sweep(spec, base, data, f"train-{mode.replace(' ', '-')}", flags)
        results[mode] = {"trials": trials, "wall_seconds": round(wall, 1),
                         "trials_per_hour": round(3600 * trials / wall, 1),
                         "best_val_seg_type": round(best, 2)}
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
