"""N separate HAN trainings vs the same N as one batched group (vaplan.batched), one run.

Same total work on both sides: N members (seeds 0..N-1, lr alternating 3e-4 / 1e-3, the
richness loss on random pseudo labels), each `--epochs` epochs over the same `--num-videos`
random LLP-shaped videos (audio (10,128), pre-pooled visual (10,2048) float16, 3D (10,512)) at
`--batch-size`; no validation split (training only). Side (a) calls vaplan.train.train_han N
times one after the other (what N Ray trials on one device do at best, without contention);
side (b) calls vaplan.batched.train_group once. Prints both wall times, the ratio and videos
per second (N x epochs x videos / seconds), best of `--repeats` (alternating order, after an
untimed one-step warm-up of each side), and each side's process CPU time (robust to other load
on a shared CPU; meaningless on a GPU).

Examples:
    python benchmarks/bench_batched.py --members 4 --num-videos 256 --threads 1
    python benchmarks/bench_batched.py --device cuda --members 8 --num-videos 10000 --epochs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from vaplan.batched import train_group
from vaplan.config import ModelConfig, TrainConfig
from vaplan.data.types import Features, PseudoLabels, SplitData
from vaplan.train import build_targets, train_han

T, C = 10, 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=4, help="N trials")
    parser.add_argument("--num-videos", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden-dim", type=int, default=512, help="512: the published HAN")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many per side")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args(argv)
    for name in ("members", "num_videos", "epochs", "batch_size", "hidden_dim", "threads",
                 "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    return args


def make_data(n: int, seed: int = 0) -> tuple[SplitData, PseudoLabels]:
    """Random LLP-shaped train split and pseudo labels (every video has a label)."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(n, C)) < 0.06).astype(np.uint8)
    y[np.arange(n), rng.integers(0, C, n)] = 1
    seg = lambda: ((rng.uniform(size=(n, T, C)) < 0.5) * y[:, None]).astype(np.uint8)  # noqa
    feats = Features(rng.normal(size=(n, T, 128)).astype(np.float16),
                     rng.normal(size=(n, T, 2048)).astype(np.float16),
                     rng.normal(size=(n, T, 512)).astype(np.float16))
    ids = np.array([f"bench{i:06d}_0_10" for i in range(n)])
    return SplitData("train", ids, y, None, None, feats), PseudoLabels(seg(), seg())


def member_configs(args) -> list[TrainConfig]:
    model = ModelConfig(hidden_dim=args.hidden_dim, ffn_dim=args.hidden_dim)
    base = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                       precision=args.precision, num_threads=args.threads, model=model)
    return [dataclasses.replace(base, seed=g, lr=(3e-4, 1e-3)[g % 2])
            for g in range(args.members)]


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn(); CUDA synchronised on both ends."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, pseudo = make_data(args.num_videos)
    targets = build_targets(train, pseudo)
    cfgs = member_configs(args)

    def separate(split=train, goal=targets, configs=cfgs) -> None:
        for cfg in configs:
            train_han(cfg, split, goal, None, progress=False)

    def group(split=train, goal=targets, configs=cfgs) -> None:
        results = train_group(configs, split, [goal] * len(configs), None)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise failed[0]

    # warm-up, untimed: one step of each side (lazy kernel and allocator set-up)
    rows = np.arange(min(args.num_videos, args.batch_size))
    small = [dataclasses.replace(c, epochs=1) for c in cfgs]
    for side in (separate, group):
        side(train.subset(rows), build_targets(train.subset(rows), PseudoLabels(
            pseudo.seg_audio[rows], pseudo.seg_visual[rows])), small)
    times: dict[str, list[tuple[float, float]]] = {"separate": [], "group": []}
    for repeat in range(args.repeats):
        order = ("separate", "group") if repeat % 2 == 0 else ("group", "separate")
        for side in order:
            times[side].append(timed(separate if side == "separate" else group))
    work = args.members * args.epochs * args.num_videos  # videos trained, both sides
    best = {side: min(values)[0] for side, values in times.items()}  # by wall time
    cpu = {side: min(v[1] for v in values) for side, values in times.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{args.members} HAN trials (hidden {args.hidden_dim}), {args.epochs} epoch(s) x "
          f"{args.num_videos} videos, batch {args.batch_size}, {args.precision}, {device}, "
          f"{args.threads} thread(s), best of {args.repeats}:")
    for side, label in (("separate", f"(a) {args.members} separate train_han runs"),
                        ("group", "(b) one batched group (train_group)")):
        print(f"  {label:42s} {best[side]:8.2f} s  {work / best[side]:9.1f} videos/s  "
              f"(process CPU {cpu[side]:.2f} s)")
    ratio = best["separate"] / best["group"]
    print(f"  speed-up of the group: {ratio:.2f}x wall ({cpu['separate'] / cpu['group']:.2f}x "
          f"CPU time); the group takes {best['group'] / (best['separate'] / args.members):.2f}x "
          f"the wall time of one trial")
    record = {"members": args.members, "num_videos": args.num_videos, "epochs": args.epochs,
              "batch_size": args.batch_size, "hidden_dim": args.hidden_dim,
              "precision": args.precision, "device": device, "threads": args.threads,
              "separate_s": best["separate"], "group_s": best["group"], "speedup": ratio,
              "separate_cpu_s": cpu["separate"], "group_cpu_s": cpu["group"]}
    if args.json:
        print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
