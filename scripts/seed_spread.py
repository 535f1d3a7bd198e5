"""Seed-to-seed spread of `val/seg_type` next to the promotion gate's bootstrap interval.

Runs the tracked pipeline (`pipelines.run`, register on) once per `train.seed` in a fresh
SQLite store, then prints (1) mean +- std over seeds of the registered (retrained) model's
val/seg_type and test/seg_type, (2) per run the gate's decision against the champion of the
moment, with its improvement interval, and (3) for each consecutive pair of seeds the paired
bootstrap of the same per-video val scores (`vaplan.stats.paired_bootstrap`, the gate's test
with the run's `registry.*` options). Results go to stdout and, with --out, to a JSON file.

    .venv/bin/python scripts/seed_spread.py --preset sim-small --seeds 0 1 2 3 4 \\
        --set train.num_threads=1 --out seed_spread.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sim-small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="section.option=value", help="config override (repeatable)")
    parser.add_argument("--store", default="",
                        help="folder for the SQLite store and step outputs (default: a temp dir)")
    parser.add_argument("--out", default="", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds")
    if any(item.startswith("train.seed=") for item in args.overrides):
        parser.error("give seeds with --seeds, not --set train.seed=...")
    return args


def run_seeds(args: argparse.Namespace, folder: Path) -> dict:
    """One pipeline per seed in one store; returns the per-seed records and pair tests."""
    from pipelines import pipeline_config_from_preset, run
    from pipelines.steps import CHECKPOINT
    from vaplan.data.dataset import load_dataset
    from vaplan.gate import gate_score_key, video_scores
    from vaplan.stats import paired_bootstrap
    from vaplan.train import load_checkpoint

    uri = f"sqlite:///{folder.resolve()}/mlruns/mlflow.db"
    base = pipeline_config_from_preset(args.preset, args.overrides)
    dataset = load_dataset(base.experiment.data)
    key = gate_score_key(base.promote_metric)
    runs, per_video = [], []
    for seed in args.seeds:
        cfg = pipeline_config_from_preset(
            args.preset, [*args.overrides, f"train.seed={seed}"], tracking_uri=uri,
            model_name="vaplan-han-seeds", work_dir=str(folder / f"work-seed{seed}"),
            run_name=f"seed-{seed}", progress=False)
        began = time.perf_counter()
        result = run(cfg, dataset=dataset)
        model, _, _ = load_checkpoint(result.steps["retrain"].path(CHECKPOINT))
        per_video.append(video_scores(model, dataset.val, key))  # (N,) of the registered model
        decision = result.registration["decision"]
        labels = {m: c["source"] for m, c in result.registration["labels"]["modalities"].items()}
        runs.append({"seed": seed, "version": result.registration["version"],
                     "val_seg_type": result.val_scores["seg_type"],
                     "test_seg_type": result.test_scores["seg_type"],
                     "labels": labels, "decision": decision,
                     "seconds": time.perf_counter() - began})
        print(f"seed {seed}: val/seg_type {result.val_scores['seg_type']:.2f}, "
              f"v{decision['version']} {'promoted' if decision['promoted'] else 'kept'} "
              f"({decision['reason']}) [{runs[-1]['seconds']:.0f} s]", flush=True)
    reg = base.experiment.registry
    pairs = []
    for (a, scores_a), (b, scores_b) in zip(zip(args.seeds, per_video),
                                            zip(args.seeds[1:], per_video[1:])):
        test = paired_bootstrap(scores_b, scores_a, samples=reg.bootstrap_samples,
                                confidence=reg.confidence, seed=reg.seed)
        pairs.append({"seeds": [a, b], **test.to_dict(),
                      "promote": test.exceeds(reg.min_improvement)})
    return {"preset": args.preset, "overrides": args.overrides, "seeds": args.seeds,
            "metric": base.promote_metric, "val_videos": len(dataset.val),
            "registry": {"confidence": reg.confidence, "min_improvement": reg.min_improvement,
                         "bootstrap_samples": reg.bootstrap_samples, "seed": reg.seed},
            "runs": runs, "pairs": pairs}


def summarise(record: dict) -> dict:
    """Mean +- std (ddof=1) over seeds, and the typical interval of the pair tests."""
    val = np.array([r["val_seg_type"] for r in record["runs"]])
    test = np.array([r["test_seg_type"] for r in record["runs"]])
    diffs = np.diff(val)
    widths = np.array([p["high"] - p["low"] for p in record["pairs"]])
    gate = [r["decision"] for r in record["runs"] if r["decision"]["low"] is not None]
    return {"val_mean": float(val.mean()), "val_std": float(val.std(ddof=1)),
            "test_mean": float(test.mean()), "test_std": float(test.std(ddof=1)),
            "pair_diff_abs_mean": float(np.abs(diffs).mean()),
            "pair_diff_std_expected": float(np.sqrt(2) * val.std(ddof=1)),
            "pair_interval_width_mean": float(widths.mean()),
            "pair_interval_width_min": float(widths.min()),
            "pair_interval_width_max": float(widths.max()),
            "pairs_promoted": int(sum(p["promote"] for p in record["pairs"])),
            "gate_promotions": int(sum(d["promoted"] for d in gate)),
            "gate_comparisons": len(gate)}


def report(record: dict) -> None:
    summary = record["summary"]
    print(f"\n{record['preset']} {' '.join(record['overrides'])}, seeds {record['seeds']}, "
          f"{record['val_videos']} val videos, gate at {100 * record['registry']['confidence']:g}%"
          f" with {record['registry']['bootstrap_samples']} resamples")
    print(f"val/seg_type  {summary['val_mean']:.2f} +- {summary['val_std']:.2f} (std over seeds)")
    print(f"test/seg_type {summary['test_mean']:.2f} +- {summary['test_std']:.2f}")
    print("\nseed  val/seg_type  labels        gate vs champion (improvement [interval])  decision")
    for r in record["runs"]:
        d = r["decision"]
        interval = ("no champion" if d["low"] is None else
                    f"v{d['champion_version']}: {d['improvement']:+.2f} [{d['low']:+.2f}, "
                    f"{d['high']:+.2f}]")
        labels = ",".join(f"{m[0]}={s}" for m, s in sorted(r["labels"].items()))
        print(f"{r['seed']:>4}  {r['val_seg_type']:12.2f}  {labels:12}  {interval:42}  "
              f"{'promoted' if d['promoted'] else 'kept'}")
    print("\nconsecutive seeds (b - a, paired bootstrap over val videos)")
    for p in record["pairs"]:
        a, b = p["seeds"]
        print(f"{a} -> {b}: {p['improvement']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}] "
              f"width {p['high'] - p['low']:.2f}: {'promote' if p['promote'] else 'keep'}")
    print(f"\nmean |difference| of consecutive seeds {summary['pair_diff_abs_mean']:.2f} "
          f"(sqrt(2) x seed std = {summary['pair_diff_std_expected']:.2f}); mean interval width "
          f"{summary['pair_interval_width_mean']:.2f} "
          f"({summary['pair_interval_width_min']:.2f}..{summary['pair_interval_width_max']:.2f});"
          f" promoted pairs {summary['pairs_promoted']}/{len(record['pairs'])}; gate "
          f"promotions {summary['gate_promotions']}/{summary['gate_comparisons']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vaplan-seeds-") as tmp:
        folder = Path(args.store or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        record = run_seeds(args, folder)
    record["summary"] = summarise(record)
    record["seconds"] = time.perf_counter() - started
    record["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    report(record)
    print(f"\ntotal {record['seconds'] / 60:.1f} min")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
