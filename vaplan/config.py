"""Typed, frozen configuration: one dataclass per concern and the one place that names presets.

Every config round-trips through plain dicts (`to_dict` / `from_dict`), so a checkpoint or an
MLflow run can store it and rebuild it, and `apply_overrides` turns "train.lr=1e-3" strings from
a command line into typed replacements (unknown keys and badly typed values are refused).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

LossVariant = Literal["baseline", "video", "naive", "richness"]
DataSource = Literal["sim", "llp"]
FeatureSet = Literal["official", "clip_clap"]
Precision = Literal["fp32", "bf16"]
PLDApply = Literal["auto", "always", "never"]
PatternBank = Literal["val", "val+test"]


@dataclass(frozen=True)
class ModelConfig:
    """HAN hyper-parameters; the defaults are the published configuration (DESIGN.md §3)."""

    audio_dim: int = 128  # VGGish
    visual_dim: int = 2048  # ResNet152 frames (pooled 8 -> 1 per segment)
    visual_3d_dim: int = 512  # R(2+1)D-18; 0 disables the 3D stream
    hidden_dim: int = 512
    ffn_dim: int = 512
    num_heads: int = 1
    dropout: float = 0.1
    num_classes: int = 25
    num_segments: int = 10


MODEL_PRESETS: dict[str, ModelConfig] = {
    "han": ModelConfig(),
    # The paper's star row: CLAP (512-d) audio and CLIP (512-d) visual segment embeddings.
    "clip_clap": ModelConfig(audio_dim=512, visual_dim=512, visual_3d_dim=0),
}


@dataclass(frozen=True)
class LossConfig:
    """Which training objective to use.

    variant:
      baseline  Eq. 2: BCE on the video label plus label-smoothed video labels per modality.
      video     Eq. 5 (L_V): modality targets are the PLG video-level labels.
      naive     L_V + lambda * L'_S (segment-wise BCE against the segment pseudo labels).
      richness  L_V + lambda * L_S (category and segment richness, Eq. 6-8).
    """

    variant: LossVariant = "richness"
    richness_weight: float = 0.5  # lambda
    use_category_richness: bool = True  # the cr term (per segment, over classes)
    use_segment_richness: bool = True  # the sr term (per class, over segments)
    smooth_audio: float = 1.0  # s for the baseline's audio target
    smooth_visual: float = 0.9  # s for the baseline's visual target


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for one HAN training run."""

    lr: float = 3e-4
    batch_size: int = 32
    epochs: int = 30
    seed: int = 0
    device: str = "cpu"
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # "bf16": the training step's matmuls under bf16 autocast (weights, loss and evaluation stay
    # fp32). ~1.5x faster on CPUs with AVX512-BF16 and on GPUs; "fp32" reproduces the paper.
    precision: Precision = "fp32"
    select_metric: str = "seg_type"  # validation score that picks the best epoch
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class PLGConfig:
    """Pseudo-label generation (Eq. 3-4): thresholds and prompt sets per modality."""

    visual_threshold: float = 0.041
    audio_threshold: float = 0.038
    visual_prompt: str = "VP1"
    audio_prompt: str = "AP2"


@dataclass(frozen=True)
class PLDConfig:
    """Pseudo-label denoising (Eq. 10-11) per modality; audio is off by default (paper §5).

    apply: what the retrain step trains on, per enabled modality.
      auto    the denoised labels only when a paired bootstrap over val videos shows their
              quality beats the PLG labels' at `confidence`; otherwise the PLG labels (logged why)
      always  the denoised labels (the paper's recipe)
      never   the PLG labels (PLD still runs and is reported)
    """

    apply: PLDApply = "auto"
    confidence: float = 0.95
    visual: bool = True
    visual_k: int = 5
    visual_alpha: float = 30.0
    audio: bool = False
    audio_k: int = 6
    audio_alpha: float = 400.0


@dataclass(frozen=True)
class SimConfig:
    """Size and seed of an LLP-sim dataset (the generative model lives in vaplan.sim)."""

    num_train: int = 10000  # train videos (val/test always use the real LLP annotations)
    seed: int = 0
    feature_dtype: str = "float16"
    val_fraction: float = 1.0  # share of the real val videos to keep (tiny test datasets)
    test_fraction: float = 1.0  # share of the real test videos to keep
    # Real annotations the simulated training truth is drawn from. "val" keeps the test split
    # out of everything the model sees in training; "val+test" only reproduces the old leak.
    pattern_bank: PatternBank = "val"


@dataclass(frozen=True)
class DataConfig:
    """Where features and teacher scores come from."""

    source: DataSource = "sim"
    sim: SimConfig = field(default_factory=SimConfig)
    feature_dir: str = ""  # llp: folder of compact per-split feature stores
    teacher_cache: str = ""  # llp: Parquet score cache written by `vaplan teach`
    feature_set: FeatureSet = "official"
    allow_random_teachers: bool = False  # accept a cache scored with random weights


@dataclass(frozen=True)
class RegistryConfig:
    """The promotion gate: a paired bootstrap over val videos (champion vs candidate).

    A candidate becomes champion only when the lower bound of the improvement of the promotion
    metric at `confidence` exceeds `min_improvement` (points); non-finite scores never promote.
    """

    confidence: float = 0.95
    min_improvement: float = 0.0
    bootstrap_samples: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one VAPLAN run needs: data, PLG, PLD and training."""

    data: DataConfig = field(default_factory=DataConfig)
    plg: PLGConfig = field(default_factory=PLGConfig)
    pld: PLDConfig = field(default_factory=PLDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)


def _sim_preset(num_train: int, epochs: int, val_fraction: float = 1.0,
                test_fraction: float = 1.0) -> ExperimentConfig:
    sim = SimConfig(num_train=num_train, val_fraction=val_fraction, test_fraction=test_fraction)
    return ExperimentConfig(data=DataConfig(sim=sim), train=TrainConfig(epochs=epochs))


PRESETS: dict[str, ExperimentConfig] = {
    # Unit/integration tests: seconds per training.
    "sim-tiny": _sim_preset(num_train=96, epochs=2, val_fraction=0.1, test_fraction=0.1),
    # `make demo` and the local Ray job: a few minutes on a 2-core laptop.
    "sim-small": _sim_preset(num_train=1500, epochs=8),
    # The full LLP-size benchmark with the paper's schedule.
    "sim-full": _sim_preset(num_train=10000, epochs=30),
    # Real LLP features and teacher cache (paths given as overrides).
    "llp": ExperimentConfig(data=DataConfig(source="llp")),
}


def get_preset(name: str) -> ExperimentConfig:
    """Return a named preset or raise naming the known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config dataclass (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `to_dict` output; unknown keys are refused."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        kwargs[key] = value
    return cls(**kwargs)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flat {"train.lr": 3e-4, ...} view, for MLflow params and search spaces."""
    flat: dict[str, Any] = {}
    for key, value in to_dict(cfg).items():
        _flatten_into(flat, f"{prefix}{key}", value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, sub_value in value.items():
            _flatten_into(flat, f"{key}.{sub}", sub_value)
    else:
        flat[key] = value


def replace_path(cfg: Any, dotted: str, value: Any) -> Any:
    """Return a copy of `cfg` with the field at "a.b.c" set to `value` (type-checked)."""
    head, _, rest = dotted.partition(".")
    names = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in names:
        raise KeyError(f"unknown config option {dotted!r} in {type(cfg).__name__}; "
                       f"expected one of {sorted(names)}")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise KeyError(f"config option {head!r} has no sub-option {rest!r}")
        return dataclasses.replace(cfg, **{head: replace_path(current, rest, value)})
    hint = typing.get_type_hints(type(cfg))[head]
    return dataclasses.replace(cfg, **{head: _coerce(dotted, hint, value)})


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Apply "key=value" strings, e.g. ["train.lr=1e-3", "plg.visual_prompt=VP2"]."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.option=value")
        key, raw = item.split("=", 1)
        cfg = replace_path(cfg, key.strip(), raw.strip())
    return cfg


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Turn a CLI string into the annotated type; refuse values that do not fit."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ValueError(f"option {name}: {value!r} is not one of {list(choices)}")
        return value
    if not isinstance(value, str):
        return value
    try:
        if hint is bool:
            lowered = value.lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return lowered in {"true", "1", "yes"}
        if hint in (int, float, str):
            return hint(value)
    except ValueError:
        raise ValueError(f"option {name}: expected {hint.__name__}, got {value!r}") from None
    raise ValueError(f"option {name}: cannot set a value of type {hint} from the command line")
