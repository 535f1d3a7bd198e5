"""Benchmark (a): the vectorised AVVP evaluation vs a per-video loop, on the 1,200 test videos.

Predictions are the real test ground truth perturbed like a trained model's output (shifted
onsets/offsets, dropped and spurious events), so runs and classes are realistic. Both
implementations must give identical numbers; the script prints both times and the ratio.

    .venv/bin/python benchmarks/bench_eval.py [--repeats 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.avvp_reference import reference_avvp_scores  # noqa: E402
from vaplan.data.llp import load_split  # noqa: E402
from vaplan.metrics import avvp_scores  # noqa: E402


def model_like_predictions(gt: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Perturb (N,T,C) truth: shift each segment's label in time, drop/add a few segments."""
    shifted = np.roll(gt, rng.integers(-1, 2), axis=1)
    drop = rng.random(gt.shape) < 0.1
    spurious = (rng.random(gt.shape) < 0.08) & labels.astype(bool)[:, None, :]
    return ((shifted & ~drop) | spurious).astype(np.uint8)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    test = load_split("test")
    rng = np.random.default_rng(args.seed)
    pa = model_like_predictions(test.gt_audio, test.video_labels, rng)
    pv = model_like_predictions(test.gt_visual, test.video_labels, rng)
    inputs = (pa, pv, test.gt_audio, test.gt_visual)
    ours, ref = avvp_scores(*inputs), reference_avvp_scores(*inputs)
    worst = max(abs(ours[k] - ref[k]) for k in ref)
    if worst > 1e-9:
        raise SystemExit(f"results differ by {worst}: {ours} vs {ref}")
    t_vec = best_time(lambda: avvp_scores(*inputs), args.repeats)
    t_loop = best_time(lambda: reference_avvp_scores(*inputs), max(1, args.repeats // 10))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"videos: {len(test)}   identical results: yes (max |diff| {worst:.1e})")
    print(f"{'per-video loop':<22}{t_loop:9.4f} s")
    print(f"{'vectorised (vaplan)':<22}{t_vec:9.4f} s")
    print(f"speed-up: {t_loop / t_vec:.1f}x   peak RSS {peak_mib:.0f} MiB")
    print("scores:", {k: round(v, 2) for k, v in ours.items()})


if __name__ == "__main__":
    main()
