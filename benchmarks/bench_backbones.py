"""Training throughput of each backbone (HAN, MGN, MM-Pyramid) at its published size.

One training epoch per backbone over the same random features with the LLP shapes (audio
(N,10,128), pre-pooled visual (N,10,2048), 3D (N,10,512), float16 as the feature store holds
them), the same weak labels and the Eq. 2 baseline loss, through `vaplan.train.train_epoch`
(the training loop the pipeline uses: batches by index, the non-finite guards, MGN's
class-token loss). Each backbone uses its MODEL_PRESETS entry and, unless --batch-size is
given, its recipe's batch size (vaplan.config.BACKBONE_RECIPES: HAN 32, MGN 16, MM-Pyramid 16).
Reported: seconds per epoch (best of --repeats; --clock cpu for process CPU time when the
machine is shared), videos per second,
and the extrapolation to the 10,000 LLP train videos. docs/results.md ("Backbones").

    python benchmarks/bench_backbones.py --num-videos 320 --threads 1 --repeats 2
    python benchmarks/bench_backbones.py --num-videos 64 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from vaplan.config import (BACKBONE_RECIPES, MODEL_PRESETS, LossConfig, TrainConfig,
                           apply_overrides)
from vaplan.losses import BatchTargets
from vaplan.models import build_model, count_parameters
from vaplan.train import train_epoch

LLP_TRAIN = 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-videos", type=int, default=320)
    parser.add_argument("--backbones", default="han,mgn,mm_pyramid",
                        help="comma-separated train.model.name values")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="0: each backbone's recipe batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="epochs per backbone; best kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: process CPU time (robust to other load on a shared box; "
                             "equals the wall time of an idle machine with --threads 1)")
    args = parser.parse_args(argv)
    for name in args.backbones.split(","):
        if name not in MODEL_PRESETS or name not in BACKBONE_RECIPES:
            parser.error(f"--backbones: unknown backbone {name!r}; expected names from "
                         f"{sorted(BACKBONE_RECIPES)}")
    if args.num_videos < 1 or args.repeats < 1 or args.threads < 1 or args.batch_size < 0:
        parser.error("--num-videos, --repeats and --threads must be >= 1, --batch-size >= 0")
    return args


def random_inputs(n: int, device: str, seed: int):
    """Features (float16, as stored) and weak-label targets (uint8) with the LLP shapes."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, 10, 128, generator=g).half()
    visual = torch.randn(n, 10, 2048, generator=g).half()
    third = torch.randn(n, 10, 512, generator=g).half()
    labels = (torch.rand(n, 25, generator=g) < 0.06).to(torch.uint8)
    targets = BatchTargets(labels, labels, labels, None, None)
    return (audio.to(device), visual.to(device), third.to(device)), targets


def recipe_config(name: str, batch_size: int, threads: int, device: str) -> TrainConfig:
    """TrainConfig of `name`'s recipe with its published model and the Eq. 2 loss."""
    recipe = [o.removeprefix("train.") for o in BACKBONE_RECIPES[name]]  # train.lr=... -> lr=...
    train = apply_overrides(TrainConfig(model=MODEL_PRESETS[name]), recipe)
    return dataclasses.replace(train, num_threads=threads, device=device,
                               batch_size=batch_size or train.batch_size,
                               loss=LossConfig(variant="baseline"))


def time_backbone(name: str, args: argparse.Namespace) -> dict:
    cfg = recipe_config(name, args.batch_size, args.threads, args.device)
    inputs, targets = random_inputs(args.num_videos, args.device, args.seed)
    torch.manual_seed(args.seed)
    model = build_model(cfg.model).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(args.seed)
    seconds, cpu = [], []
    for epoch in range(1, args.repeats + 1):
        started, started_cpu = time.perf_counter(), time.process_time()
        train_epoch(model, optimizer, cfg, inputs, targets, generator, epoch=epoch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    best = min(cpu) if args.clock == "cpu" else min(seconds)
    return {"backbone": name, "parameters": count_parameters(model),
            "batch_size": cfg.batch_size, "videos": args.num_videos,
            "clock": args.clock, "epoch_seconds": round(best, 3),
            "wall_seconds": [round(s, 3) for s in seconds],
            "cpu_seconds": [round(s, 3) for s in cpu],
            "videos_per_second": round(args.num_videos / best, 1),
            "llp_epoch_seconds": round(best * LLP_TRAIN / args.num_videos, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [time_backbone(name, args) for name in args.backbones.split(",")]
    han = next((r for r in rows if r["backbone"] == "han"), None)
    print(f"({args.clock} clock, {args.threads} thread(s), {args.device})")
    print("| backbone | parameters | batch | s / epoch (N videos) | videos / s | "
          "s / epoch (10k, extrapolated) | x HAN |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['epoch_seconds'] / han['epoch_seconds']:.2f}" if han else "-"
        print(f"| {r['backbone']} | {r['parameters']:,} | {r['batch_size']} | "
              f"{r['epoch_seconds']:.2f} ({r['videos']}) | {r['videos_per_second']} | "
              f"{r['llp_epoch_seconds']:.0f} | {ratio} |")
    print(json.dumps({"threads": args.threads, "device": args.device, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
