"""Training throughput of the AVE weak models (AVEL, PSP, CMBS) at their reference sizes.

One training epoch per model over the same random features with AVE's official shapes (audio
(N, 10, 128), visual (N, 10, 7, 7, 512), float16 as the feature store holds them) and random
video labels, through `vaplan.ave.train.train_weak` (the one weak loop of all three: batches
by index, the model's weak loss, its schedule and gradient clipping) with each model's recipe
(`vaplan.ave.AVE_RECIPES`: batch 64 / 128 / 64; --batch-size overrides). Validation runs on
one video only, so the time is the training epoch's; an untimed epoch on one batch first
takes each model's one-time start-up cost (~1.5 s for the first model) out. Reported: seconds
per epoch (best of --repeats; --clock cpu for process CPU time when the machine is shared),
videos per second, the extrapolation to AVE's 3,339 train videos (linear in N: every batch
costs the same), the ratio to AVEL, and a full recipe's training time (epochs x the extrapolated epoch).
docs/results.md ("AVE models").

    python benchmarks/bench_ave_models.py --num-videos 512 --threads 1 --clock cpu --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from vaplan.ave import AVE_MODELS, AVE_RECIPES, build_ave_model
from vaplan.ave.avel import count_parameters
from vaplan.ave.train import AveSplitTensors, train_weak
from vaplan.data.ave import BACKGROUND, NUM_AVE_CLASSES

AVE_TRAIN = 3_339


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-videos", type=int, default=256)
    parser.add_argument("--models", default=",".join(AVE_MODELS),
                        help=f"comma-separated names from {list(AVE_MODELS)}")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="0: each model's recipe batch size")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed epochs per model (each from fresh weights); best kept")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time, robust to other load on a shared box")
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        if name not in AVE_MODELS:
            parser.error(f"--models: unknown AVE model {name!r}; expected names from "
                         f"{list(AVE_MODELS)}")
    if min(args.num_videos, args.repeats, args.threads) < 1 or args.batch_size < 0:
        parser.error("--num-videos, --repeats and --threads must be >= 1, --batch-size >= 0")
    return args


def random_split(n: int, seed: int) -> AveSplitTensors:
    """Features (float16, as stored) with AVE's shapes, random event labels and truth."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((n, 10, 128), dtype=np.float32).astype(np.float16)
    visual = rng.standard_normal((n, 10, 7, 7, 512), dtype=np.float32).astype(np.float16)
    label = rng.integers(0, NUM_AVE_CLASSES, n)
    truth = np.where(rng.random((n, 10)) < 0.8, label[:, None], BACKGROUND)
    return AveSplitTensors(audio, visual, label, truth)


def time_model(name: str, train: AveSplitTensors, val: AveSplitTensors,
               args: argparse.Namespace) -> dict:
    recipe = AVE_RECIPES[name]
    cfg = dataclasses.replace(recipe, epochs=1, eval_every=1,
                              batch_size=args.batch_size or recipe.batch_size)
    warm_up = AveSplitTensors(train.audio[:cfg.batch_size], train.visual[:cfg.batch_size],
                              train.video_label[:cfg.batch_size])
    train_weak(build_ave_model(name), cfg, warm_up, val)
    runs = [timed(lambda: train_weak(build_ave_model(name), cfg, train, val))
            for _ in range(args.repeats)]  # [(wall, cpu)] seconds
    best = min(run[args.clock == "cpu"] for run in runs)
    epoch_seconds = best * AVE_TRAIN / args.num_videos
    return {"model": name, "parameters": count_parameters(build_ave_model(name)),
            "batch_size": cfg.batch_size, "videos": args.num_videos, "clock": args.clock,
            "epoch_seconds": round(best, 3), "wall_seconds": [round(w, 3) for w, _ in runs],
            "cpu_seconds": [round(c, 3) for _, c in runs],
            "videos_per_second": round(args.num_videos / best, 2),
            "ave_epoch_seconds": round(epoch_seconds, 1), "recipe_epochs": recipe.epochs,
            "recipe_hours": round(epoch_seconds * recipe.epochs / 3600, 1)}


def timed(work) -> tuple[float, float]:
    """(wall, process CPU) seconds of work() (seeded the same for every run)."""
    torch.manual_seed(0)
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


# The printed table: (header, cell of a row, given the AVEL row or None)
COLUMNS = (
    ("model", lambda r, _: r["model"]),
    ("parameters", lambda r, _: f"{r['parameters']:,}"),
    ("batch", lambda r, _: str(r["batch_size"])),
    ("s / epoch (N videos)", lambda r, _: f"{r['epoch_seconds']:.2f} ({r['videos']})"),
    ("videos / s", lambda r, _: str(r["videos_per_second"])),
    ("s / epoch (3,339, extrapolated)", lambda r, _: f"{r['ave_epoch_seconds']:.0f}"),
    ("x AVEL", lambda r, avel: f"{r['epoch_seconds'] / avel['epoch_seconds']:.2f}"
     if avel else "-"),
    ("recipe epochs", lambda r, _: str(r["recipe_epochs"])),
    ("recipe hours", lambda r, _: str(r["recipe_hours"])),
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, val = random_split(args.num_videos, 0), random_split(1, 1)
    rows = [time_model(name, train, val, args) for name in args.models.split(",")]
    avel = next((r for r in rows if r["model"] == "avel"), None)
    print(f"({args.clock} clock, {args.threads} thread(s), CPU)")
    print("| " + " | ".join(header for header, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * (len(COLUMNS) - 1))
    for row in rows:
        print("| " + " | ".join(cell(row, avel) for _, cell in COLUMNS) + " |")
    print(json.dumps({"threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
