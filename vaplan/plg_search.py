"""Per-class PLG thresholds: label quality as a function of one tau per class, searched on val.

The objective of one modality is the "average" label quality of Tables 2-4, (seg F + event F)
/ 2, a mean over videos. A video's F is the mean of its per-class F over the classes active in
that video (`vaplan.metrics.video_f`), and the TP/FP/FN of class c depend only on tau_c. So
changing tau_c changes one term of each video's sum: `ClassSearch` keeps every video's per-class
F and counts, and scores all candidate values of tau_c at once from class c's counts alone
(the grid is passed as the class axis of `segment_counts` / `event_counts`). That makes
`coordinate_ascent` (one class at a time, over `GRID`, until a round gains nothing) cheap.

`GRID`: the paper's 0.001 step over [0.020, 0.080], which holds the softmax probabilities of
25 classes the teachers give (about 1/25 = 0.04; LLP-sim: 0.030..0.062 on val).
Thresholds are chosen on val only; test quality is reported (`compare`), never used to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vaplan.categories import CLASSES, NUM_CLASSES
from vaplan.config import PLGConfig
from vaplan.metrics import class_f, event_counts, segment_counts
from vaplan.pseudo_labels import label_quality, threshold_segments

GRID = np.round(np.arange(0.020, 0.0805, 0.001), 3)  # (61,) the candidate taus
MODALITIES = ("audio", "visual")


class ClassSearch:
    """One modality on one split: probs (N,T,C), video labels (N,C), ground truth (N,T,C)."""

    def __init__(self, probs: np.ndarray, video_labels: np.ndarray, gt: np.ndarray) -> None:
        self.probs = np.asarray(probs)
        self.video_labels = np.asarray(video_labels).astype(bool)
        self.gt = np.asarray(gt).astype(bool)
        if not (self.probs.shape == self.gt.shape and self.probs.ndim == 3
                and self.video_labels.shape == (self.probs.shape[0], self.probs.shape[2])):
            raise ValueError(f"probabilities {self.probs.shape}, video labels "
                             f"{self.video_labels.shape} and truth {self.gt.shape} do not match; "
                             f"expected (N, T, C), (N, C), (N, T, C)")

    def score(self, tau: float | np.ndarray) -> float:
        """The label quality "average" (percent) with tau (a float or a (C,) vector): exactly
        `label_quality(threshold_segments(...), gt)["average"]`, as the pipeline computes it."""
        labels = threshold_segments(self.probs, self.video_labels, tau)
        return label_quality(labels, self.gt)["average"]

    def class_counts(self, c: int, taus: np.ndarray) -> np.ndarray:
        """TP/FP/FN of class c for each candidate tau: (3, 2 levels, N, G) (seg, event)."""
        taus = np.asarray(taus, dtype=self.probs.dtype)  # compared as threshold_segments does
        pred = (self.probs[:, :, c, None] >= taus) & self.video_labels[:, None, c, None]
        gt = np.broadcast_to(self.gt[:, :, c, None], pred.shape)  # (N, T, G)
        return np.stack([segment_counts(pred, gt), event_counts(pred, gt)], axis=1)

    def state(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-class F and activity of every video at the (C,) tau: both (2 levels, N, C)."""
        tau = np.asarray(tau, dtype=np.float64)
        return class_f(np.stack([self.class_counts(c, tau[c:c + 1])[..., 0]
                            for c in range(tau.size)], axis=-1))

    def curve(self, state: tuple[np.ndarray, np.ndarray], c: int,
              taus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The objective for each value in `taus` of tau_c, the other classes as in `state`:
        (G,), and class c's F and activity for each value, (2, N, G)."""
        f, active = state
        f_c, active_c = class_f(self.class_counts(c, taus))  # (2, N, G)
        total = (f.sum(-1) - f[..., c])[..., None] + f_c  # (2, N, G)
        count = (active.sum(-1) - active[..., c])[..., None] + active_c
        video = np.where(count > 0, total / np.maximum(count, 1), 1.0)  # per-video F
        return 100 * video.mean(axis=1).mean(axis=0), f_c, active_c  # (seg + event) / 2

    def best_global(self, grid: np.ndarray = GRID) -> float:
        """The single tau of `grid` with the best val objective (ties: the smallest)."""
        scores = [self.score(float(t)) for t in grid]
        return float(grid[int(np.argmax(scores))])


@dataclass(frozen=True)
class Ascent:
    """A coordinate-ascent result: tau (C,), its objective, the objective after each round."""

    tau: np.ndarray
    objective: float
    rounds: tuple[float, ...]


def coordinate_ascent(search: ClassSearch, start: float | np.ndarray, grid: np.ndarray = GRID,
                      max_rounds: int = 10, tol: float = 1e-9) -> Ascent:
    """Maximise the objective one class at a time over `grid` (the current value kept on ties),
    rounds over the C classes until one gains <= tol or `max_rounds`. Never below `start`."""
    tau = np.broadcast_to(np.asarray(start, dtype=np.float64), (search.probs.shape[2],)).copy()
    best, rounds, (f, active) = search.score(tau), [], search.state(tau)
    for _ in range(max_rounds):
        before = best
        for c in range(tau.size):
            candidates = np.append(grid, tau[c])  # the current value last: kept on ties
            scores, f_c, active_c = search.curve((f, active), c, candidates)
            pick = int(np.flatnonzero(scores >= scores.max() - tol)[-1])
            if scores[pick] > best + tol:
                tau[c], best = candidates[pick], float(scores[pick])
                f[..., c], active[..., c] = f_c[..., pick], active_c[..., pick]
        rounds.append(best)
        if best - before <= tol:
            break
    return Ascent(tau, search.score(tau), tuple(rounds))


def searches(teachers, split, plg: PLGConfig) -> dict[str, ClassSearch]:
    """{modality: ClassSearch} of one split (teacher scores of `plg`'s prompt sets, its truth)."""
    return {"audio": ClassSearch(teachers.get(plg.audio_prompt), split.video_labels,
                                 split.gt_audio),
            "visual": ClassSearch(teachers.get(plg.visual_prompt), split.video_labels,
                                  split.gt_visual)}


def as_vector(values: dict, modality: str) -> np.ndarray:
    """A trial config {"visual": {class: tau}, ...} -> that modality's (C,) vector."""
    return np.array([values[modality][name] for name in CLASSES], dtype=np.float64)


def compare(val: dict[str, ClassSearch], test: dict[str, ClassSearch],
            taus: dict[str, dict[str, np.ndarray]]) -> dict[str, float]:
    """Val and test label quality of each threshold set {method: {modality: tau}}:
    `<method>/plg/<split>/<modality>/average` and `<method>/plg/<split>/average` (percent)."""
    out = {}
    for method, by_modality in taus.items():
        for split, found in (("val", val), ("test", test)):
            scores = {m: found[m].score(by_modality[m]) for m in MODALITIES}
            out.update({f"{method}/plg/{split}/{m}/average": s for m, s in scores.items()})
            out[f"{method}/plg/{split}/average"] = float(np.mean(list(scores.values())))
    return out


def threshold_rows(taus: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """The per-class table: one row per class and modality, a tau column per method."""
    return [{"class": name, "modality": m,
             **{f"tau_{method}": round(float(np.broadcast_to(taus[method][m], (NUM_CLASSES,))[c]),
                                       6) for method in taus}}
            for m in MODALITIES for c, name in enumerate(CLASSES)]


def threshold_file(tau: dict[str, np.ndarray], **about) -> dict:
    """What `--set plg.<modality>_threshold_per_class=@FILE` reads: {option: {class: tau}}."""
    return {**about, **{f"plg.{m}_threshold_per_class": {name: round(float(t), 6) for name, t in
                                                          zip(CLASSES, tau[m])}
                        for m in MODALITIES}}


class PerClassStudy:
    """What `vaplan sweep plg --per-class` compares (docs/ray.md), for one dataset and the prompt
    sets of `plg`: the best global tau and coordinate ascent from it, both chosen on val; a
    search of the 50 taus (TPE) is added with `add`; `scores`/`chosen` then compare them."""

    def __init__(self, dataset, plg: PLGConfig) -> None:
        self.plg = plg
        self.val, self.test = (searches(dataset.teachers[split], getattr(dataset, split), plg)
                               for split in ("val", "test"))
        start = {m: np.full(NUM_CLASSES, self.val[m].best_global()) for m in MODALITIES}
        self.taus = {"global": start,
                     "coord": {m: coordinate_ascent(self.val[m], start[m]).tau for m in MODALITIES}}

    def seed_point(self) -> dict[str, float]:
        """The global tau as one point of the 50-dimensional space ({"visual/Speech": tau})."""
        return {f"{m}/{name}": float(self.taus["global"][m][0]) for m in MODALITIES
                for name in CLASSES}

    def add(self, method: str, values: dict) -> None:
        """Add a searched set, {"audio"|"visual": {class: tau}} (a Tune trial config)."""
        self.taus[method] = {m: as_vector(values, m) for m in MODALITIES}

    def scores(self) -> dict[str, float]:
        return compare(self.val, self.test, self.taus)

    def chosen(self) -> str:
        """The per-class set with the best val objective (test never chooses)."""
        scores = self.scores()
        return max((k for k in self.taus if k != "global"),
                   key=lambda k: scores[f"{k}/plg/val/average"])

    def chosen_plg(self) -> PLGConfig:
        """The PLG options to use: the global winners and the chosen per-class taus."""
        tau = self.taus[self.chosen()]
        return replace(self.plg, **{f"{m}_threshold": float(self.taus["global"][m][0])
                                    for m in MODALITIES},
                       **{f"{m}_threshold_per_class": tuple(float(t) for t in tau[m])
                          for m in MODALITIES})

    def description(self, preset: str, trials: int) -> str:
        """Markdown for the parent run: the val -> test table and the chosen set."""
        scores, names = self.scores(), {"global": "global tau (grid)",
                                        "tpe": f"per class, TPE ({trials} trials)",
                                        "coord": "per class, coordinate ascent"}
        lines = [f"**tune_plg --per-class** ({preset}, prompts {self.plg.visual_prompt}/"
                 f"{self.plg.audio_prompt}): label quality (percent, mean of audio and visual "
                 f"`average`), chosen on val; test only evaluates.", "",
                 "| thresholds | val | test | val - test |", "| --- | --- | --- | --- |"]
        for method in self.taus:
            v, t = scores[f"{method}/plg/val/average"], scores[f"{method}/plg/test/average"]
            lines.append(f"| {names.get(method, method)} | {v:.2f} | {t:.2f} | {v - t:+.2f} |")
        return "\n".join(lines + ["", f"Chosen: `{self.chosen()}` (best on val), artifact "
                                   "`per_class_thresholds.json`; every tau: "
                                   "`per_class_thresholds_table.json`."])
