"""The pipeline's figures as PNG files (matplotlib's object API: no pyplot, no global backend).

Fig. 3a  per-class event-level F of audio and visual pseudo labels (`plg_figure`),
Fig. 3b  PLG vs PLD per class, Fig. 7 the PLD forward-loss heatmap of one video with the
         flipped segments marked (`denoise_figures`),
Figs. 5-7 timelines of a few val videos (ground truth, pseudo labels, predictions; A and V;
         `timelines_figure`).
Pure: arrays in, files out (written atomically, vaplan.io); the pipeline logs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from vaplan.categories import CLASSES
from vaplan.config import PLDConfig
from vaplan.data.types import PseudoLabels, SplitData
from vaplan.denoise import forward_loss_map
from vaplan.io import atomic_path
from vaplan.metrics import per_class_f

SOURCE_COLORS = {"GT": "#2b8a3e", "PLG": "#1c7ed6", "PLD": "#7048e8", "pred": "#e8590c"}


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def plot_per_class_f(series: dict[str, np.ndarray], title: str,
                     path: str | os.PathLike) -> Path:
    """Grouped bars: one group per class, one bar per series (C,) percent, NaN = absent."""
    fig = Figure(figsize=(13, 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(CLASSES))
    for i, (name, values) in enumerate(series.items()):
        shown = np.nan_to_num(np.asarray(values, float), nan=0.0)
        mean = np.nanmean(values) if np.isfinite(values).any() else float("nan")
        ax.bar(x + (i - (len(series) - 1) / 2) * width, shown, width,
               label=f"{name} (mean {mean:.1f})")
    ax.set_xticks(x, [c.replace("_", " ") for c in CLASSES], rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("event-level F (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def _timeline_matrix(sources: dict[str, np.ndarray],
                     classes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Rows (class x source) of one video and modality: values 0 (off) or 1+source index."""
    rows, labels = [], []
    for c in classes:
        for s, (name, seg) in enumerate(sources.items()):
            rows.append(np.where(seg[:, c] > 0, s + 1, 0))  # (T,)
            labels.append(f"{CLASSES[c].replace('_', ' ')} · {name}")
    return np.asarray(rows), labels


def plot_timelines(video_ids: np.ndarray, video_labels: np.ndarray,
                   sources: dict[str, dict[str, np.ndarray]], picks: list[int],
                   path: str | os.PathLike) -> Path:
    """Timelines of `picks` videos: sources[modality][name] is (N,T,C) {0,1} (GT, PLG, ...)."""
    modalities = list(sources)
    names = list(next(iter(sources.values())))
    cmap = ListedColormap(["#f1f3f5"] + [SOURCE_COLORS.get(n, "#495057") for n in names])
    fig = Figure(figsize=(6.5 * len(modalities), 2.2 + 1.6 * len(picks) * len(names) / 2))
    axes = fig.subplots(len(picks), len(modalities), squeeze=False)
    for r, video in enumerate(picks):
        classes = np.flatnonzero(video_labels[video])
        for m, modality in enumerate(modalities):
            ax = axes[r][m]
            per_source = {n: sources[modality][n][video] for n in names}
            matrix, labels = _timeline_matrix(per_source, classes)
            ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=0, vmax=len(names),
                      interpolation="nearest")
            ax.set_yticks(np.arange(len(labels)), labels, fontsize=7)
            ax.set_xticks(np.arange(matrix.shape[1]))
            ax.set_xlabel("segment (s)", fontsize=8)
            ax.set_title(f"{video_ids[video]} · {modality}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_loss_heatmap(loss: np.ndarray, flips: np.ndarray, classes: np.ndarray, video_id: str,
                      modality: str, path: str | os.PathLike) -> Path:
    """PLD forward loss M' (T, C) of one video for `classes`, flipped cells outlined."""
    fig = Figure(figsize=(8, 1.5 + 0.45 * max(len(classes), 1)))
    ax = fig.add_subplot()
    shown = loss[:, classes].T  # (C', T)
    image = ax.imshow(shown, aspect="auto", cmap="magma", interpolation="nearest")
    for c_row, c in enumerate(classes):
        for t in np.flatnonzero(flips[:, c]):
            ax.add_patch(_cell_box(t, c_row))
    ax.set_yticks(np.arange(len(classes)), [CLASSES[c].replace("_", " ") for c in classes],
                  fontsize=8)
    ax.set_xticks(np.arange(loss.shape[0]))
    ax.set_xlabel("segment (s)")
    ax.set_title(f"PLD forward loss M' ({modality}) of {video_id}; boxes = flipped labels",
                 fontsize=9)
    fig.colorbar(image, ax=ax, label="BCE(P, Ŷ)")
    return _save(fig, path)


def _cell_box(t: int, row: int):
    from matplotlib.patches import Rectangle

    return Rectangle((t - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#40c057", linewidth=2)


def pick_timeline_videos(video_labels: np.ndarray, changed: np.ndarray, count: int) -> list[int]:
    """Val videos to show: those where PLD changed the most labels, then multi-class ones."""
    changed_per_video = changed.reshape(len(changed), -1).sum(axis=1)  # (N,)
    richness = video_labels.sum(axis=1)
    order = np.lexsort((np.arange(len(richness)), -richness, -changed_per_video))
    return [int(i) for i in order[:count] if richness[i] > 0]


def plg_figure(labels: PseudoLabels, val: SplitData, path: str | os.PathLike) -> Path:
    """Fig. 3a: per-class event-level F of val's PLG labels, audio and visual."""
    return plot_per_class_f({"audio PLG": per_class_f(labels.seg_audio, val.gt_audio),
                             "visual PLG": per_class_f(labels.seg_visual, val.gt_visual)},
                            "Per-class event-level F of PLG pseudo labels on val (Fig. 3a)", path)


def timelines_figure(val: SplitData, plg: PseudoLabels, pld: PseudoLabels,
                     pred_audio: np.ndarray, pred_visual: np.ndarray, count: int,
                     path: str | os.PathLike) -> Path | None:
    """Figs. 5-7: GT, PLG, PLD and predicted (N,T,C) events of `count` val videos, A and V."""
    if count <= 0:
        return None
    sources = {"audio": {"GT": val.gt_audio, "PLG": plg.seg_audio, "PLD": pld.seg_audio,
                         "pred": pred_audio},
               "visual": {"GT": val.gt_visual, "PLG": plg.seg_visual, "PLD": pld.seg_visual,
                          "pred": pred_visual}}
    changed = (plg.seg_visual ^ pld.seg_visual) | (plg.seg_audio ^ pld.seg_audio)
    picks = pick_timeline_videos(val.video_labels, changed, count)
    return plot_timelines(val.video_ids, val.video_labels, sources, picks, path) if picks else None


def denoise_figures(out: Path, val: SplitData, before: PseudoLabels, after: PseudoLabels,
                    prob_seg: np.ndarray, pld: PLDConfig) -> None:
    """Fig. 3b (PLG vs PLD per class) and Fig. 7 (forward-loss heatmap of one val video) in
    `out/plots/`; prob_seg is the model's (N, T, 2, C) val output."""
    series = {}
    for modality, gt in (("audio", val.gt_audio), ("visual", val.gt_visual)):
        if getattr(pld, modality):
            series[f"{modality} PLG"] = per_class_f(getattr(before, f"seg_{modality}"), gt)
            series[f"{modality} PLD"] = per_class_f(getattr(after, f"seg_{modality}"), gt)
    if series:
        plot_per_class_f(series, "PLG vs PLD per class on val (Fig. 3b)",
                         out / "plots/fig3b_plg_vs_pld_per_class_f.png")
    modality = "visual" if pld.visual or not pld.audio else "audio"
    m = 1 if modality == "visual" else 0
    old, new = getattr(before, f"seg_{modality}"), getattr(after, f"seg_{modality}")
    video = int(np.argmax((old ^ new).reshape(len(old), -1).sum(axis=1)
                          * 1000 + old.max(axis=1).sum(axis=1)))
    classes = np.flatnonzero(old[video].max(axis=0))
    if len(classes) == 0:
        return
    loss = forward_loss_map(prob_seg[video, :, m], old[video]) * old[video].max(axis=0)  # M'
    plot_loss_heatmap(loss, (old[video] ^ new[video]).astype(bool), classes,
                      str(val.video_ids[video]), modality, out / "plots/fig7_pld_forward_loss.png")
