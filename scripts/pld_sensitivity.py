"""Issue 19: PLD's effect as a function of the teacher-only share of visual teacher misses.

For every seed s and share x, builds LLP-sim with data.sim.seed = s and
data.sim.teacher_only_share = x, and with train.seed = s runs the paper's recipe through
`vaplan.method` (no re-implementation):

  PLG labels (train, val) -> stage-one model on the PLG labels (Table 5 row 4, best val epoch)
  -> PLD (pld.visual_k / pld.visual_alpha, default K=5, alpha=30) of the val and train labels
  -> retrained model on the denoised train labels (row 5, the paper's "always" recipe).

Recorded per run: visual label quality (seg / event / average) of PLG and PLD on val and on
train (the simulated train truth is known), the number of flipped visual labels, and the seg /
event Type@AV of rows 4 and 5 on val and test. One JSON line per run, appended as soon as it
ends, so an interrupted measurement can still be summarised.

    python scripts/pld_sensitivity.py --preset sim-small --seeds 0 1 2 \\
        --shares 0 0.25 0.5 0.75 1 --set train.num_threads=1 --out pld-sens.jsonl
    python scripts/pld_sensitivity.py --summarise pld-sens.jsonl --plot docs/img/pld_sensitivity.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from vaplan.config import ExperimentConfig, apply_overrides, flatten, get_preset  # noqa: E402

QUALITY_KEYS = ("seg", "event", "average")


def run_config(base: ExperimentConfig, seed: int, share: float) -> ExperimentConfig:
    """The preset with the seed (dataset and training) and the teacher-only share."""
    return apply_overrides(base, [f"data.sim.seed={seed}", f"train.seed={seed}",
                                  f"data.sim.teacher_only_share={share}"])


def _quality(seg_visual, gt_visual) -> dict[str, float]:
    from vaplan.pseudo_labels import label_quality

    return {k: round(v, 3) for k, v in label_quality(seg_visual, gt_visual).items()
            if k in QUALITY_KEYS}


def flip_breakdown(plg_seg, pld_seg, gt_seg) -> dict[str, int]:
    """Where PLD's visual flips went: added (0 -> 1) or removed (1 -> 0) labels, each right
    (the new label equals the truth) or wrong, and how many PLG labels were wrong to start with
    (missed: truth 1, label 0; extra: truth 0, label 1). All (N, T, C) segment counts."""
    plg, pld, gt = (np.asarray(a).astype(bool) for a in (plg_seg, pld_seg, gt_seg))
    added, removed = pld & ~plg, plg & ~pld
    return {"added_right": int((added & gt).sum()), "added_wrong": int((added & ~gt).sum()),
            "removed_right": int((removed & ~gt).sum()),
            "removed_wrong": int((removed & gt).sum()),
            "plg_missed": int((gt & ~plg).sum()), "plg_extra": int((plg & ~gt).sum())}


def measure_one(cfg: ExperimentConfig, retrain: bool = True) -> dict:
    """PLG -> stage one -> PLD (val and train) -> retrain, for one (seed, share)."""
    from vaplan.method import denoise_with_model, fit, make_pseudo_labels
    from vaplan.sim import build_sim_dataset
    from vaplan.train import evaluate_model

    start = time.perf_counter()
    sim = cfg.data.sim
    tag = f"[pld-sens] share {sim.teacher_only_share:g} seed {sim.seed}"
    dataset = build_sim_dataset(sim)
    plg = {split: make_pseudo_labels(dataset, split, cfg.plg) for split in ("train", "val")}

    def on_epoch(stats, row):
        print(f"{tag} row {row} epoch {stats.epoch}: val {cfg.train.select_metric} "
              f"{stats.val[cfg.train.select_metric]:.2f} ({stats.seconds:.0f} s)", flush=True)

    stage_one = fit(cfg.train, dataset, plg["train"], progress=False,
                    on_epoch=lambda s: on_epoch(s, 4))
    pld = {split: denoise_with_model(stage_one.model, getattr(dataset, split), plg[split],
                                     cfg.pld) for split in ("train", "val")}
    rec = {"share": sim.teacher_only_share, "seed": sim.seed, "train_seed": cfg.train.seed,
           "digest": dataset.digest, "best_epoch_4": stage_one.best_epoch,
           "flips": {split: int((pld[split].seg_visual != plg[split].seg_visual).sum())
                     for split in ("train", "val")}}
    for split in ("train", "val"):
        gt = getattr(dataset, split).gt_visual
        rec[f"{split}_plg"] = _quality(plg[split].seg_visual, gt)
        rec[f"{split}_pld"] = _quality(pld[split].seg_visual, gt)
        rec[f"{split}_flips"] = flip_breakdown(plg[split].seg_visual, pld[split].seg_visual, gt)
    rec["row4"] = {split: evaluate_model(stage_one.model, getattr(dataset, split))
                   for split in ("val", "test")}
    if retrain:
        retrained = fit(cfg.train, dataset, pld["train"], progress=False,
                        on_epoch=lambda s: on_epoch(s, 5))
        rec["best_epoch_5"] = retrained.best_epoch
        rec["row5"] = {split: evaluate_model(retrained.model, getattr(dataset, split))
                       for split in ("val", "test")}
    rec["seconds"] = round(time.perf_counter() - start, 1)
    rec["config"] = {k: v for k, v in flatten(cfg).items()
                     if k.startswith(("data.sim.", "train.", "pld.visual")) and "model." not in k}
    return rec


def _mean_sd(values: list[float], sign: str = "+") -> str:
    """"mean ± sd" (just the value for one seed, "–" for none)."""
    if not values:
        return "–"
    mean = format(statistics.mean(values), f"{sign}.2f")
    return f"{mean} ± {statistics.stdev(values):.2f}" if len(values) > 1 else mean


def _plain(values: list[float]) -> str:
    return _mean_sd(values, sign="")


def _groups(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        key = (rec["config"]["data.sim.num_train"], rec["config"]["train.epochs"], rec["share"])
        groups.setdefault(key, []).append(rec)
    return groups


def summarise(records: list[dict]) -> str:
    """Markdown: per (scale, share) mean ± sd over seeds of the PLD - PLG val label quality,
    the PLG val quality, the flips, and rows 5 - 4 seg Type@AV (test and val)."""
    lines = ["| train videos, epochs | share | seeds | val PLG seg / event | Δ val seg (PLD − PLG) "
             "| Δ val event | Δ val average | val flips | Δ train average "
             "| ⑤ − ④ test seg Type@AV | ⑤ − ④ val seg Type@AV |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (n, epochs, share), recs in sorted(_groups(records).items()):
        recs = sorted(recs, key=lambda r: r["seed"])
        delta = {k: [r["val_pld"][k] - r["val_plg"][k] for r in recs] for k in QUALITY_KEYS}
        train = [r["train_pld"]["average"] - r["train_plg"]["average"] for r in recs]
        both = [r for r in recs if "row5" in r]
        row_test = [r["row5"]["test"]["seg_type"] - r["row4"]["test"]["seg_type"] for r in both]
        row_val = [r["row5"]["val"]["seg_type"] - r["row4"]["val"]["seg_type"] for r in both]
        flips = statistics.mean(r["flips"]["val"] for r in recs)
        lines.append(
            f"| {n}, {epochs} | {share:g} | {','.join(str(r['seed']) for r in recs)} "
            f"| {_plain([r['val_plg']['seg'] for r in recs])} / "
            f"{_plain([r['val_plg']['event'] for r in recs])} "
            f"| {_mean_sd(delta['seg'])} | {_mean_sd(delta['event'])} "
            f"| {_mean_sd(delta['average'])} | {flips:.0f} | {_mean_sd(train)} "
            f"| {_mean_sd(row_test)} | {_mean_sd(row_val)} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    """Δ val and train label average (PLD − PLG) and ⑤ − ④ test seg Type@AV vs share,
    mean ± sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (n, epochs), marker in zip(sorted({k[:2] for k in _groups(records)}), "os^"):
        rows = sorted((k[2], v) for k, v in _groups(records).items() if k[:2] == (n, epochs))
        series = {
            "val visual label average, PLD − PLG": lambda r: r["val_pld"]["average"]
            - r["val_plg"]["average"],
            "train visual label average, PLD − PLG": lambda r: r["train_pld"]["average"]
            - r["train_plg"]["average"],
            "test seg Type@AV, ⑤ − ④": lambda r: r["row5"]["test"]["seg_type"]
            - r["row4"]["test"]["seg_type"] if "row5" in r else None,
        }
        for label, get in series.items():
            xs, means, sds = [], [], []
            for share, recs in rows:
                values = [v for v in map(get, recs) if v is not None]
                if values:
                    xs.append(share)
                    means.append(statistics.mean(values))
                    sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            ax.errorbar(xs, means, yerr=sds, marker=marker, capsize=3,
                        label=f"{label} ({n} videos, {epochs} ep)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("teacher-only share of visual teacher misses (data.sim.teacher_only_share)")
    ax.set_ylabel("points (mean ± sd over seeds)")
    ax.set_title("LLP-sim: PLD (K=5, α=30) vs teacher-only share", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sim-small")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override, e.g. train.epochs=4 (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--no-retrain", action="store_true", help="skip row 5 (label quality only)")
    parser.add_argument("--out", type=Path, help="JSON lines file, one line appended per run")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSONL",
                        help="only print the table of existing JSON lines files")
    parser.add_argument("--plot", type=Path, help="with --summarise: write the PNG plot here")
    args = parser.parse_args(argv)
    if args.summarise:
        records = [json.loads(line) for path in args.summarise
                   for line in path.read_text().splitlines() if line.strip()]
        print(summarise(records))
        if args.plot:
            plot(records, args.plot)
        return 0
    if args.out is None:
        parser.error("--out is required unless --summarise is given")
    base = apply_overrides(get_preset(args.preset), args.overrides)
    # seed outermost: an interrupted run still has every share paired
    runs = [(seed, share) for seed in args.seeds for share in args.shares]
    records = [_run_and_append(base, seed, share, args) for seed, share in runs]
    print(summarise(records))
    return 0


def _run_and_append(base: ExperimentConfig, seed: int, share: float,
                    args: argparse.Namespace) -> dict:
    """Measure one (seed, share), append its JSON line to args.out at once, return it."""
    rec = measure_one(run_config(base, seed, share), retrain=not args.no_retrain)
    rec["preset"], rec["overrides"] = args.preset, args.overrides
    with args.out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(rec) + "\n")
    print(f"[pld-sens] share {share:g} seed {seed}: val visual average PLG "
          f"{rec['val_plg']['average']:.2f} -> PLD {rec['val_pld']['average']:.2f} "
          f"({rec['flips']['val']} flips, {rec['seconds']:.0f} s)", flush=True)
    return rec


if __name__ == "__main__":
    sys.exit(main())
