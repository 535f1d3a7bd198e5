"""One HAN training epoch: vaplan's in-memory feature store vs official one-file-per-video loading.

  (a) memory: the compact feature store (pre-pooled (10, 2048) float16 ResNet features, built from
      the official layout by vaplan.data.features.build_feature_store), loaded once, held as
      torch tensors and batched by index (vaplan.train.train_epoch).
  (b) files:  the official style: one float32 `.npy` per video per stream (vggish (10,128),
      res152 (80,2048), r2plus1d_18 (10,512)) read by a torch Dataset through a DataLoader
      (batch 32, shuffle), then the same model step (vaplan.train.train_step).

Same HAN, same initial weights, same loss (baseline), same number of steps. Each side runs in its
own child process so its peak RSS (getrusage ru_maxrss) is its own. Features are random with the
right shapes (written once to a temporary folder, 6.8 GB for 10,000 videos; freshly written files
are mostly in the page cache, the best case for (b)).

  --repeats N           run each side N times in alternating order and report the fastest run
                        of each (the CPU is often shared, so single runs are noisy)
  --data-only           time only the data path: batches built as the model step would get them
  (b) applies fc_v to all 80 frames before pooling, as the official network does (same outputs
      up to rounding, 8x the fc_v work): that is the official style this benchmark compares with.
  --same-model          (b) pools before fc_v like (a), to isolate the data path.

  --guard-overhead      instead: the CPU time of vaplan.train's non-finite guard (the fused
                        gradient norm + loss read before optimizer.step; the epoch-end weight
                        check) next to the whole train_step of the published HAN, in-process,
                        `--repeats` blocks of 10 steps (process CPU time: robust to other load)

Runtime: one step of the published HAN takes ~0.15 s on 2 free CPU cores (1 s and more when the
cores are shared), so the default 10,000 videos (313 steps per side) takes ~2 x 50 s plus ~1 min
of setup on a quiet 2-core machine and far longer on a busy one; `--num-videos 1000` (32 steps per
side) finishes in 1-4 minutes. Example:
    python benchmarks/bench_train_epoch.py --num-videos 1000 --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vaplan.config import LossConfig, TrainConfig
from vaplan.data.features import STREAMS, build_feature_store, load_feature_store
from vaplan.losses import BatchTargets
from vaplan.models import HAN
from vaplan.train import features_to_tensors, select_batch, train_epoch, train_step

C = 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-videos", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for (b)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="train.precision of (a); (b), the official style, stays fp32")
    parser.add_argument("--same-model", action="store_true",
                        help="(b) pools before fc_v like (a): isolates the data path")
    parser.add_argument("--data-only", action="store_true",
                        help="time only the data path (batches built, no model step)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run (a) and (b) this many times, alternating order; report the best")
    parser.add_argument("--workdir", default=None,
                        help="parent folder of the temporary files (default: the system temp)")
    parser.add_argument("--guard-overhead", action="store_true",
                        help="time the training guards against a whole train_step instead")
    parser.add_argument("--child", choices=["memory", "files"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.official_fc_order = not args.same_model  # the official network: fc_v on all 80 frames
    return args


def video_ids(n: int) -> list[str]:
    """LLP-like filenames whose first 11 characters are unique."""
    return [f"vid{i:08d}_0_10" for i in range(n)]


def video_labels(n: int, seed: int) -> np.ndarray:
    """(N, C) uint8 weak labels, one or two classes per video."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, C), np.uint8)
    y[np.arange(n), rng.integers(0, C, n)] = 1
    y[np.arange(n), rng.integers(0, C, n)] = 1
    return y


def write_official_layout(root: Path, ids: list[str], seed: int) -> None:
    """feats/vggish, feats/res152, feats/r2plus1d_18: one float32 .npy per video per stream."""
    rng = np.random.default_rng(seed)
    for folder, shape in STREAMS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    for vid in ids:
        for folder, shape in STREAMS.values():
            np.save(root / folder / f"{vid[:11]}.npy", rng.random(shape, dtype=np.float32))


class OfficialLLPDataset(torch.utils.data.Dataset):
    """Like the official LLP_dataset: three np.load calls per item, a dict per video."""

    def __init__(self, root: Path, ids: list[str], labels: np.ndarray) -> None:
        self.root, self.ids, self.labels = root, ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int) -> dict:
        key = self.ids[idx][:11]
        return {"audio": np.load(self.root / "vggish" / f"{key}.npy"),  # (10, 128)
                "video_s": np.load(self.root / "res152" / f"{key}.npy"),  # (80, 2048)
                "video_st": np.load(self.root / "r2plus1d_18" / f"{key}.npy"),  # (10, 512)
                "label": self.labels[idx].astype(np.float32)}  # (C,)


class OfficialOrderHAN(HAN):
    """HAN with the official order: fc_v on all 80 frames, then average pooling 8 -> 1."""

    def embed_visual(self, visual, visual_3d):
        B, frames, _ = visual.shape
        x = self.fc_v(visual)  # (B, 80, d)
        x = x.reshape(B, self.config.num_segments, frames // self.config.num_segments, -1)
        x = self.fc_fusion(torch.cat([x.mean(dim=2), self.fc_st(visual_3d)], dim=-1))
        return x  # (B, T, d)


def make_model(args: argparse.Namespace, official_order: bool = False, precision: str = "fp32"):
    torch.manual_seed(args.seed)
    model = (OfficialOrderHAN() if official_order else HAN()).to(args.device)
    cfg = TrainConfig(batch_size=args.batch_size, device=args.device,
                      loss=LossConfig(variant="baseline"), seed=args.seed, precision=precision)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.lr), cfg


def run_memory(args: argparse.Namespace, work: Path) -> dict:
    """(a): load the compact store once, then vaplan's index batching."""
    started = time.perf_counter()
    feats = load_feature_store(work / "store")
    inputs = features_to_tensors(feats, args.device)  # float16 tensors, cast per batch
    y = torch.from_numpy(video_labels(args.num_videos, args.seed)).to(args.device)
    targets = BatchTargets(y, y, y)
    load_s = time.perf_counter() - started
    model, optimizer, cfg = make_model(args, precision=args.precision)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    if args.data_only:  # the same batching as train_epoch, without the model step
        order = torch.randperm(args.num_videos, generator=generator)
        for start in range(0, args.num_videos, args.batch_size):
            select_batch(inputs, targets, order[start:start + args.batch_size])
        loss = 0.0
    else:
        loss = train_epoch(model, optimizer, cfg, inputs, targets, generator)
    return {"load_s": load_s, "epoch_s": time.perf_counter() - started, "loss": loss,
            "steps": -(-args.num_videos // args.batch_size)}


def run_files(args: argparse.Namespace, work: Path) -> dict:
    """(b): official per-video .npy files through a DataLoader, then the same model step."""
    dataset = OfficialLLPDataset(work / "feats", video_ids(args.num_videos),
                                 video_labels(args.num_videos, args.seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers,
                                         generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, cfg = make_model(args, official_order=args.official_fc_order)
    model.train()
    step = (lambda *_: 0.0) if args.data_only else train_step
    started, losses = time.perf_counter(), []
    for batch in loader:
        audio, frames, st, y = (batch[k].to(args.device)
                                for k in ("audio", "video_s", "video_st", "label"))
        losses.append(step(model, optimizer, cfg, (audio, frames, st), BatchTargets(y, y, y)))
    return {"load_s": 0.0, "epoch_s": time.perf_counter() - started,
            "loss": float(np.mean(losses)), "steps": len(losses)}


def child_main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports
    result = (run_memory if args.child == "memory" else run_files)(args, work)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["base_rss_mb"] = base_rss
    print("RESULT " + json.dumps(result))


def run_child(mode: str, args: argparse.Namespace, work: Path) -> dict:
    """Run one side in a fresh process (own peak RSS) and parse its RESULT line."""
    cmd = [sys.executable, __file__, "--num-videos", str(args.num_videos),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--workers", str(args.workers), "--device", args.device, "--seed", str(args.seed),
           "--child", mode, "--workdir", str(work), "--precision", args.precision]
    cmd += [flag for flag, on in (("--same-model", args.same_model),
                                  ("--data-only", args.data_only)) if on]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} benchmark failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def best_run(results: list[dict]) -> dict:
    """The fastest of repeated runs (robust to other load on a shared CPU); peak RSS: the max."""
    merged = dict(min(results, key=lambda r: r["load_s"] + r["epoch_s"]))
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    merged["epochs_s"] = [round(r["load_s"] + r["epoch_s"], 1) for r in results]
    return merged


def report(args: argparse.Namespace, setup: dict, a: dict, b: dict) -> None:
    total_a = a["load_s"] + a["epoch_s"]
    print(f"\nHAN, one epoch over {args.num_videos} videos, batch {args.batch_size}, "
          f"{a['steps']:.0f} vs {b['steps']:.0f} steps, device {args.device}, "
          f"{args.threads} threads, {args.workers} DataLoader workers, "
          f"official fc order in (b): {args.official_fc_order}, data only: {args.data_only}, "
          f"precision of (a): {args.precision}")
    print(f"setup: wrote official files in {setup['write_s']:.1f} s, "
          f"built the feature store in {setup['store_s']:.1f} s (one-off)")
    print(f"{'':34s}{'wall s':>10s}{'peak RSS MB':>14s}{'(after imports)':>17s}"
          f"{'mean loss':>11s}")
    print(f"{'(a) in-memory store (load+epoch)':34s}{total_a:10.1f}{a['peak_rss_mb']:14.0f}"
          f"{a['base_rss_mb']:17.0f}{a['loss']:11.4f}"
          f"   (load {a['load_s']:.1f} s, epoch {a['epoch_s']:.1f} s)")
    print(f"{'(b) per-video .npy + DataLoader':34s}{b['epoch_s']:10.1f}{b['peak_rss_mb']:14.0f}"
          f"{b['base_rss_mb']:17.0f}{b['loss']:11.4f}")
    if args.repeats > 1:
        print(f"best of {args.repeats} runs each; (a) {a['epochs_s']} s, (b) {b['epochs_s']} s")
    print(f"speed-up (b)/(a): {b['epoch_s'] / total_a:.2f}x "
          f"(epoch only: {b['epoch_s'] / a['epoch_s']:.2f}x)")


def guard_overhead(args: argparse.Namespace, steps: int = 10) -> None:
    """CPU time per train_step of the published HAN vs its non-finite guards alone."""
    from statistics import median

    from vaplan.train import _norm, check_weights

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    b = args.batch_size
    inputs = tuple(torch.randn(b, 10, d, generator=gen).to(args.device) for d in (128, 2048, 512))
    y = (torch.rand(b, C, generator=gen) < 0.1).float().to(args.device)
    model, optimizer, cfg = make_model(args, precision=args.precision)
    model.train()
    clock = time.process_time
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def per_call(fn) -> float:
        fn()
        sync()
        started = clock()
        for _ in range(steps):
            fn()
        sync()
        return (clock() - started) / steps * 1e3

    def guard() -> None:  # what train_step adds before optimizer.step
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        torch.stack([y.sum(), _norm(grads).to(args.device)]).tolist()

    times: dict[str, list[float]] = {"step": [], "guard": [], "weights": []}
    for _ in range(args.repeats):
        times["step"].append(per_call(lambda: train_step(model, optimizer, cfg, inputs,
                                                         BatchTargets(y, y, y))))
        times["guard"].append(per_call(guard))
        times["weights"].append(per_call(lambda: check_weights(model, "bench")))
    step, guard_ms, weights = (median(times[k]) for k in ("step", "guard", "weights"))
    print(f"published HAN, batch {b}, {args.threads} threads, {args.device}, {args.precision}, "
          f"median of {args.repeats} blocks of {steps} calls (process CPU time):")
    print(f"train_step (guard included) {step:.1f} ms; guard alone {guard_ms:.2f} ms per step "
          f"= {100 * guard_ms / (step - guard_ms):.2f}% of an unguarded step; "
          f"epoch-end weight check {weights:.2f} ms per epoch")


def main(argv: list[str] | None = None) -> None:
    """Write the data once, run (a) and (b) in child processes, print the comparison."""
    args = parse_args(argv)
    if args.guard_overhead:
        guard_overhead(args)
        return
    if args.child:
        child_main(args)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        ids = video_ids(args.num_videos)
        started = time.perf_counter()
        write_official_layout(work / "feats", ids, args.seed)
        setup = {"write_s": time.perf_counter() - started}
        started = time.perf_counter()
        build_feature_store(work / "feats", ids, work / "store", progress=False)
        setup["store_s"] = time.perf_counter() - started
        os.sync()  # flush the freshly written files so writeback does not slow the first run
        runs: dict[str, list[dict]] = {"memory": [], "files": []}
        for repeat in range(args.repeats):
            for mode in (("memory", "files") if repeat % 2 == 0 else ("files", "memory")):
                runs[mode].append(run_child(mode, args, work))
        report(args, setup, best_run(runs["memory"]), best_run(runs["files"]))


if __name__ == "__main__":
    main()
