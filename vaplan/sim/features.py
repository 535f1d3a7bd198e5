"""Simulated LLP input features (VGGish 128-d audio, ResNet152 2048-d and R(2+1)D 512-d visual).

Per segment t of video n and feature stream m:

    x[n, t] = s_m[n, t] @ P_m + nu_m[n] + eps[n, t]      eps ~ N(0, I), nu_m ~ N(0, sd_nu^2 I)

with s_m the latent salience of that stream (audio; visual + visual context for both visual
streams), P_m (C, D) class prototypes (per-dimension sd `*_feature_gain`, part of the variance
shared inside a confusion group) and nu_m a per-video nuisance (scene, microphone, camera).
Arrays are generated chunk by chunk in float32 and stored in the requested dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vaplan.categories import NUM_CLASSES
from vaplan.data.types import Features
from vaplan.sim.latent import Latent
from vaplan.sim.params import SimParams, confusion_group_ids

FEATURE_DIMS: dict[str, int] = {"audio": 128, "visual": 2048, "visual_3d": 512}


@dataclass(frozen=True)
class FeatureWorld:
    """Class prototypes per feature stream, fixed for a seed."""

    prototypes: dict[str, np.ndarray]  # stream -> (C, D) float32


def build_feature_world(params: SimParams, rng: np.random.Generator) -> FeatureWorld:
    """Draw prototypes; classes of one confusion group share `feature_group_share` of variance."""
    group = confusion_group_ids()  # (C,)
    gains = {"audio": params.audio_feature_gain, "visual": params.visual_feature_gain,
             "visual_3d": params.visual3d_feature_gain}
    share = params.feature_group_share
    prototypes = {}
    for stream, dim in FEATURE_DIMS.items():
        own = rng.standard_normal((NUM_CLASSES, dim))
        common = rng.standard_normal((max(group.max() + 1, 1), dim))[np.maximum(group, 0)]
        mixed = np.where(group[:, None] >= 0,
                         np.sqrt(1 - share) * own + np.sqrt(share) * common, own)
        prototypes[stream] = (gains[stream] * mixed).astype(np.float32)
    return FeatureWorld(prototypes)


def allocate_features(n: int, dtype: str) -> Features:
    """Empty (n, T, D) arrays for the three streams."""
    shape = lambda d: (n, 10, d)  # noqa: E731
    return Features(np.empty(shape(FEATURE_DIMS["audio"]), dtype=dtype),
                    np.empty(shape(FEATURE_DIMS["visual"]), dtype=dtype),
                    np.empty(shape(FEATURE_DIMS["visual_3d"]), dtype=dtype))


def fill_features(out: Features, rows: slice, latent: Latent, world: FeatureWorld,
                  params: SimParams, rng: np.random.Generator) -> None:
    """Generate one chunk of videos into `out[rows]` (float32 maths, stored as out's dtype)."""
    visible = latent.visual + latent.context  # (n, T, C)
    sources = {"audio": latent.audio, "visual": visible, "visual_3d": visible}
    targets = {"audio": out.audio, "visual": out.visual, "visual_3d": out.visual_3d}
    for stream, salience in sources.items():
        n, t, _ = salience.shape
        dim = FEATURE_DIMS[stream]
        x = rng.standard_normal((n, t, dim), dtype=np.float32)  # (n, T, D) noise
        x += params.nuisance_sd * rng.standard_normal((n, 1, dim), dtype=np.float32)
        x += salience @ world.prototypes[stream]
        targets[stream][rows] = x
