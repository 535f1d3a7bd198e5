"""Issue 18: what training LLP-sim on test patterns was worth (val vs val+test pattern bank).

For every seed s and every bank, builds LLP-sim with data.sim.seed = s and
data.sim.pattern_bank = bank, trains HAN for each requested Table 5 row (--rows: 1 = loss
`baseline`, Eq. 2, on the weak labels; 2 = loss `video` on the PLG video-level labels) with
train.seed = s, keeps the best val epoch (train.select_metric) and evaluates it on test. For one
seed both banks share the simulator's world (prototypes, teacher biases) and the val/test
features and teacher scores; only the sampled train truth (and so the train features and train
teacher scores) differ, so the per-seed differences are paired.

One JSON line per run is appended to --out as soon as the run ends (a long measurement can be
summarised while it runs, or after an interruption): config, best epoch, val score per epoch,
val and test scores of the kept model, seconds.

    python scripts/measure_pattern_bank.py --preset sim-small --seeds 0 1 2 \\
        --set train.num_threads=1 --out leak-small.jsonl
    python scripts/measure_pattern_bank.py --summarise leak-small.jsonl
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

from vaplan.config import ExperimentConfig, apply_overrides, flatten, get_preset  # noqa: E402

BANKS = ("val", "val+test")
VARIANTS = {"1": "baseline", "2": "video"}  # Table 5 rows this script can train


def run_config(base: ExperimentConfig, seed: int, bank: str, row: str) -> ExperimentConfig:
    """The preset with the seed (dataset and training), the bank and the row's loss variant."""
    return apply_overrides(base, [f"data.sim.seed={seed}", f"data.sim.pattern_bank={bank}",
                                  f"train.seed={seed}", f"train.loss.variant={VARIANTS[row]}"])


def measure_one(cfg: ExperimentConfig, row: str) -> dict:
    """Build the dataset, train the row, evaluate the best-val-epoch model on val and test."""
    from vaplan.method import fit, make_pseudo_labels
    from vaplan.sim import build_sim_dataset
    from vaplan.train import evaluate_model

    start = time.perf_counter()
    dataset = build_sim_dataset(cfg.data.sim)
    pseudo = None if row == "1" else make_pseudo_labels(dataset, "train", cfg.plg)
    tag = f"[leak] row {row} bank {cfg.data.sim.pattern_bank} seed {cfg.data.sim.seed}"
    trained = fit(cfg.train, dataset, pseudo, progress=False, on_epoch=lambda stats: print(
        f"{tag} epoch {stats.epoch}: val {cfg.train.select_metric} "
        f"{stats.val[cfg.train.select_metric]:.2f} ({stats.seconds:.0f} s)", flush=True))
    return {"row": row, "bank": cfg.data.sim.pattern_bank, "seed": cfg.data.sim.seed,
            "train_seed": cfg.train.seed, "digest": dataset.digest,
            "description": dataset.description, "best_epoch": trained.best_epoch,
            "val_by_epoch": [round(h.val[cfg.train.select_metric], 3) for h in trained.history],
            "val": evaluate_model(trained.model, dataset.val),
            "test": evaluate_model(trained.model, dataset.test),
            "seconds": round(time.perf_counter() - start, 1),
            "config": {k: v for k, v in flatten(cfg).items()
                       if k.startswith(("data.sim.", "train.")) and "model." not in k}}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def summarise(records: list[dict]) -> str:
    """Markdown: per (scale, row, bank) mean ± sd of test/val seg and event Type@AV, best epochs;
    then the paired val - (val+test) differences per seed."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        key = (rec["config"]["data.sim.num_train"], rec["config"]["train.epochs"], rec["row"])
        groups.setdefault(key + (rec["bank"],), []).append(rec)
    lines = ["| train videos, epochs | row | bank | seeds | test seg Type@AV | test event Type@AV "
             "| val seg Type@AV (best epoch) | best epochs |", "|---|---|---|---|---|---|---|---|"]
    for (n, epochs, row, bank), recs in sorted(groups.items()):
        recs = sorted(recs, key=lambda r: r["seed"])
        lines.append(f"| {n}, {epochs} | {row} | {bank} | {','.join(str(r['seed']) for r in recs)} "
                     f"| {_mean_sd([r['test']['seg_type'] for r in recs])} "
                     f"| {_mean_sd([r['test']['evt_type'] for r in recs])} "
                     f"| {_mean_sd([r['val']['seg_type'] for r in recs])} "
                     f"| {', '.join(str(r['best_epoch']) for r in recs)} |")
    lines += ["", "| train videos, epochs | row | paired seeds | Δ test seg (val − val+test) "
              "| Δ test event |", "|---|---|---|---|---|"]
    for (n, epochs, row, bank), recs in sorted(groups.items()):
        if bank != "val":
            continue
        other = {r["seed"]: r for r in groups.get((n, epochs, row, "val+test"), [])}
        pairs = [(r, other[r["seed"]]) for r in recs if r["seed"] in other]
        if not pairs:
            continue
        seg = [a["test"]["seg_type"] - b["test"]["seg_type"] for a, b in pairs]
        evt = [a["test"]["evt_type"] - b["test"]["evt_type"] for a, b in pairs]
        lines.append(f"| {n}, {epochs} | {row} | {len(pairs)} | {_mean_sd(seg)} | {_mean_sd(evt)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="sim-small")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override, e.g. train.precision=bf16 (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--banks", nargs="+", default=list(BANKS), choices=BANKS)
    parser.add_argument("--rows", nargs="+", default=["1"], choices=sorted(VARIANTS))
    parser.add_argument("--out", type=Path, help="JSON lines file, one line appended per run")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSONL",
                        help="only print the tables of existing JSON lines files")
    args = parser.parse_args(argv)
    if args.summarise:
        records = [json.loads(line) for path in args.summarise
                   for line in path.read_text().splitlines() if line.strip()]
        print(summarise(records))
        return 0
    if args.out is None:
        parser.error("--out is required unless --summarise is given")
    try:
        base = apply_overrides(get_preset(args.preset), args.overrides)
    except (KeyError, ValueError) as err:
        parser.error(str(err))
    if base.data.source != "sim":
        parser.error(f"preset {args.preset!r} reads data.source={base.data.source!r}; the pattern "
                     "bank exists only for LLP-sim (data.source=sim)")
    records = []
    for seed in args.seeds:  # seed outermost: an interrupted run still has paired banks
        for row in args.rows:
            for bank in args.banks:
                cfg = run_config(base, seed, bank, row)
                rec = measure_one(cfg, row)
                rec["preset"], rec["overrides"] = args.preset, args.overrides
                records.append(rec)
                with args.out.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(rec) + "\n")
                print(f"[leak] row {row} bank {bank} seed {seed}: best epoch {rec['best_epoch']} "
                      f"test seg/evt Type {rec['test']['seg_type']:.2f} / "
                      f"{rec['test']['evt_type']:.2f} ({rec['seconds']:.0f} s)", flush=True)
    print(summarise(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
