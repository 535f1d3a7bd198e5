"""Typed, frozen configuration: one dataclass per concern and the one place that names presets.

Every option is checked where the config is built. Each field is declared with its `Rule`
(`option(default, rule)`; Literal, bool and str fields take theirs from the annotation) and
`__post_init__` runs the one check, `check_fields`, so direct construction, `from_dict`
(checkpoints, MLflow records, the pyfunc model), `replace_path` / `apply_overrides` ("--set
train.lr=1e-3" strings) and sweep spaces all refuse the same values with the same message:
a `vaplan.errors.ConfigError` naming the full dotted option and what is allowed, e.g.
"train.lr must be a finite number > 0, got inf". Every config round-trips through plain dicts
(`to_dict` / `from_dict`). Checks that involve several options (data.source=llp needs its paths)
live in `validate_experiment`, which `apply_overrides` runs after the last override.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal, Mapping

from vaplan.categories import NUM_CLASSES, NUM_SEGMENTS
from vaplan.errors import ConfigError
from vaplan.metrics import SCORE_KEYS
from vaplan.prompts import AUDIO_PROMPTS, VISUAL_PROMPTS

LossVariant = Literal["baseline", "video", "naive", "richness"]
DataSource = Literal["sim", "llp"]
FeatureSet = Literal["official", "clip_clap"]
Precision = Literal["fp32", "bf16"]
PLDApply = Literal["auto", "always", "never"]
LRSchedule = Literal["step", "none"]
PatternBank = Literal["val", "val+test"]
FeatureDtype = Literal["float16", "float32"]
Backbone = Literal["han", "mgn", "mm_pyramid"]
# What a model trains on: the weak video labels y, MA's modality-aware video-level labels, the
# PLG segment labels, or PLG denoised by PLD. One vocabulary: `labels.source` of the tracked
# pipeline and `Row.labels` of the ablation tables (vaplan.ablation).
LabelKind = Literal["video", "ma", "plg", "pld"]
LABEL_KINDS: tuple[str, ...] = typing.get_args(LabelKind)


# ---------------------------------------------------------------- rules (what an option accepts)

@dataclass(frozen=True)
class Rule:
    """What one option accepts.

    kind: "int" | "float" | "bool" | "str". Numbers may have bounds `lo`/`hi` (closed unless
    `lo_open`/`hi_open`); floats must be finite and accept ints; ints refuse floats and bools.
    Strings may be limited to `choices` or to a full-match regex `pattern`. `text` replaces the
    generated description of what is allowed.
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    pattern: str = ""
    text: str = ""

    def describe(self) -> str:
        """What is allowed, as it ends "<option> must be ..."."""
        if self.text:
            return self.text
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a string"
        noun = "an integer" if self.kind == "int" else "a finite number"
        if self.lo is not None and self.hi is not None:
            if self.kind == "int":
                return f"an integer in {self.lo}..{self.hi}"
            return (f"a number in {'(' if self.lo_open else '['}{self.lo:g}, "
                    f"{self.hi:g}{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{noun} {'<' if self.hi_open else '<='} {self.hi:g}"
        return noun

    def refuse(self, name: str, value: Any) -> ConfigError:
        return ConfigError(f"{name} must be {self.describe()}, got {value!r}")

    def check(self, name: str, value: Any) -> Any:
        """The value, normalised (numpy scalars -> Python, ints -> float for floats), or raise."""
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()
        if self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind in ("int", "float"):
            number = _as_number(value, self.kind)
            ok = number is not None and self._in_range(number)
            value = number if ok else value
        else:
            ok = (isinstance(value, str) and (not self.choices or value in self.choices)
                  and (not self.pattern or re.fullmatch(self.pattern, value) is not None))
        if not ok:
            raise self.refuse(name, value)
        return value

    def parse(self, name: str, raw: str) -> Any:
        """A command-line string as this option's type, then checked."""
        text = raw.strip()
        try:
            if self.kind == "int":
                value: Any = int(text)
            elif self.kind == "float":
                value = float(text)
            elif self.kind == "bool":
                value = {"true": True, "1": True, "yes": True,
                         "false": False, "0": False, "no": False}[text.lower()]
            else:
                value = raw
        except (ValueError, KeyError):
            raise self.refuse(name, raw) from None
        return self.check(name, value)

    def _in_range(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))


def _as_number(value: Any, kind: str) -> int | float | None:
    """An int (kind "int": no floats, no bools) or a finite float (ints accepted), else None."""
    if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
        return None
    if kind == "int":
        return value
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def integer(lo: int | None = None, hi: int | None = None, text: str = "") -> Rule:
    return Rule("int", lo=lo, hi=hi, text=text)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    return Rule("float", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def one_of(choices: typing.Iterable[str], text: str = "") -> Rule:
    choices = tuple(choices)
    return Rule("str", choices=choices, text=text and f"one of {list(choices)} ({text})")


POSITIVE = number(0, lo_open=True)  # > 0
NON_NEGATIVE = number(0)  # >= 0
UNIT = number(0, 1)  # [0, 1]
PROBABILITY = number(0, 1, lo_open=True, hi_open=True)  # (0, 1)
FRACTION = number(0, 1, lo_open=True)  # (0, 1]
SEED = integer(0, 2**32 - 1)  # what every RNG (numpy, torch, Python) accepts
PLD_K = integer(1, NUM_SEGMENTS)  # K smallest losses among the T segments of a video
DEVICE = Rule("str", pattern=r"cpu|cuda(:\d+)?|mps", text="'cpu', 'cuda', 'cuda:N' or 'mps'")
NAME = Rule("str", pattern=r"\S(.*\S)?", text="a non-empty name")


def option(default: Any, rule: Rule) -> Any:
    """A dataclass field with its rule (read by `check_fields`)."""
    return field(default=default, metadata={"rule": rule})


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _rule_of(fld: dataclasses.Field, hint: Any) -> Rule | None:
    """A field's rule: declared with `option`, else from its annotation (None: a section)."""
    if "rule" in fld.metadata:
        return fld.metadata["rule"]
    if typing.get_origin(hint) is Literal:
        return one_of(typing.get_args(hint))
    kinds = {bool: "bool", int: "int", float: "float", str: "str"}
    if hint in kinds:
        return Rule(kinds[hint])
    return None


def option_rule(cls: type, name: str) -> Rule:
    """The rule of one option, e.g. option_rule(PLDConfig, "visual_k") (library guards use it)."""
    fld = next(f for f in dataclasses.fields(cls) if f.name == name)
    rule = _rule_of(fld, _optional(_hints(cls)[name])[0])
    if rule is None:
        raise ValueError(f"{option_name(cls, name)} is a section, not an option")
    return rule


def _optional(hint: Any) -> tuple[Any, bool]:
    """(inner type, True) for `X | None`, else (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def option_name(obj_or_cls: Any, name: str) -> str:
    """The full dotted name of a field, e.g. "train.model.hidden_dim"."""
    section = getattr(obj_or_cls, "SECTION", "")
    return f"{section}.{name}" if section else name


def check_fields(obj: Any) -> None:
    """The one validation: every field of a config dataclass against its rule (in place)."""
    hints = _hints(type(obj))
    for fld in dataclasses.fields(obj):
        name, value = option_name(obj, fld.name), getattr(obj, fld.name)
        hint, optional = _optional(hints[fld.name])
        if optional and value is None:
            continue
        rule = _rule_of(fld, hint)
        if rule is None:  # a nested section (or another typed value)
            if isinstance(hint, type) and not isinstance(value, hint):
                raise ConfigError(f"{name} must be a {hint.__name__} section, got {value!r}")
            continue
        checked = rule.check(name, value)
        if checked is not value:
            object.__setattr__(obj, fld.name, checked)


class Checked:
    """Base of the config dataclasses: `__post_init__` runs `check_fields`."""

    SECTION: ClassVar[str] = ""  # dotted prefix of this dataclass's options in ExperimentConfig

    def __post_init__(self) -> None:
        check_fields(self)


def describe_options(cls: type) -> str:
    """One line per option with what it accepts (appended to each config docstring)."""
    hints = _hints(cls)
    lines = []
    for fld in dataclasses.fields(cls):
        rule = _rule_of(fld, _optional(hints[fld.name])[0])
        what = rule.describe() if rule else f"the {option_name(cls, fld.name)}.* options"
        lines.append(f"      {fld.name}: {what}")
    return "Allowed values:\n" + "\n".join(lines)


# ---------------------------------------------------------------- the configuration

@dataclass(frozen=True)
class ModelConfig(Checked):
    """The backbone and its hyper-parameters; the defaults are the published HAN
    (docs/fidelity.md). MODEL_PRESETS holds each backbone's published values (docs/backbones.md).

    name: which backbone `vaplan.models.build_model` builds.
      han         HAN (Tian et al. 2020): one shared hybrid attention layer
      mgn         MGN (Mo & Tian 2022): class-aware grouping, uses audio_depth, visual_depth,
                  av_depth, drop_path (ffn_dim is its MLP width)
      mm_pyramid  MM-Pyramid (Yu et al. 2022): `levels` dilated attention + TCN levels
    hidden_dim, ffn_dim, num_heads, dropout apply to every backbone. num_heads must divide
    hidden_dim (checked by `validate_experiment`).
    """

    SECTION: ClassVar[str] = "train.model"

    name: Backbone = "han"
    audio_dim: int = option(128, integer(1))  # VGGish
    visual_dim: int = option(2048, integer(1))  # ResNet152 frames (pooled 8 -> 1 per segment)
    visual_3d_dim: int = option(512, integer(0))  # R(2+1)D-18; 0 disables the 3D stream
    hidden_dim: int = option(512, integer(1))
    ffn_dim: int = option(512, integer(1))
    num_heads: int = option(1, integer(1))
    dropout: float = option(0.1, number(0, 1, hi_open=True))
    num_classes: int = option(NUM_CLASSES, integer(NUM_CLASSES, NUM_CLASSES,
                                                    text=f"{NUM_CLASSES} (the LLP classes)"))
    num_segments: int = option(NUM_SEGMENTS, integer(NUM_SEGMENTS, NUM_SEGMENTS,
                                                      text=f"{NUM_SEGMENTS} (1-s segments)"))
    # mgn: transformer blocks before the audio / visual / cross-modal grouping, and the
    # stochastic-depth rate of those blocks (reference: 3 / 3 / 6, 0.1)
    audio_depth: int = option(3, integer(0, 24))
    visual_depth: int = option(3, integer(0, 24))
    av_depth: int = option(6, integer(0, 24))
    drop_path: float = option(0.1, number(0, 1, hi_open=True))
    # mm_pyramid: pyramid levels; level l attends within |t - t'| <= 2^l (reference: 4)
    levels: int = option(4, integer(1, 8))


MODEL_PRESETS: dict[str, ModelConfig] = {
    "han": ModelConfig(),
    # The paper's star row: CLAP (512-d) audio and CLIP (512-d) visual segment embeddings.
    "clip_clap": ModelConfig(audio_dim=512, visual_dim=512, visual_3d_dim=0),
    # stoneMo/MGN main.py defaults: dim 128, 8 heads, MLP ratio 4, no dropout, depths 3/3/6.
    "mgn": ModelConfig(name="mgn", hidden_dim=128, ffn_dim=512, num_heads=8, dropout=0.0),
    # JustinYuu/MM_Pyramid main_avvp.py defaults: hid_dim 512, ffn_dim 512, 8 heads, 4 levels,
    # dropout 0.2 (MPAM's default).
    "mm_pyramid": ModelConfig(name="mm_pyramid", hidden_dim=512, ffn_dim=512, num_heads=8,
                              dropout=0.2),
}

# Each backbone's training recipe where its reference differs from TrainConfig's defaults
# (Adam, StepLR(10, 0.1) once per epoch, BCE with label smoothing 1.0 / 0.9 are shared;
# MGN's class-token loss is part of the model: `MGN.auxiliary_loss`). docs/backbones.md.
BACKBONE_RECIPES: dict[str, tuple[str, ...]] = {
    "han": (),
    "mgn": ("train.lr=3e-4", "train.batch_size=16", "train.epochs=40"),
    "mm_pyramid": ("train.lr=1e-4", "train.batch_size=16", "train.epochs=40"),
}


def backbone_overrides(name: str, recipe: bool = True) -> tuple[str, ...]:
    """The `--set` overrides that select backbone `name` with its published hyper-parameters
    (the fields of MODEL_PRESETS[name] that differ from ModelConfig()) and, with `recipe`, its
    training recipe (BACKBONE_RECIPES), e.g. for a Table 8 row."""
    if name not in BACKBONE_RECIPES:
        raise ConfigError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONE_RECIPES)}")
    preset, default = MODEL_PRESETS[name], ModelConfig()
    model = tuple(f"train.model.{f.name}={getattr(preset, f.name)}"
                  for f in dataclasses.fields(ModelConfig)
                  if getattr(preset, f.name) != getattr(default, f.name))
    return model + (BACKBONE_RECIPES[name] if recipe else ())


# Each label source's loss where it differs from the default (richness needs segment labels,
# which the weak and MA labels do not have): Table 5 row 1 and Table 8's "+MA" rows.
LABEL_RECIPES: dict[str, tuple[str, ...]] = {
    "video": ("train.loss.variant=baseline",),
    "ma": ("train.loss.variant=video",),
    "plg": (),
    "pld": (),
}


@dataclass(frozen=True)
class LossConfig(Checked):
    """Which training objective to use.

    variant:
      baseline  Eq. 2: BCE on the video label plus label-smoothed video labels per modality.
      video     Eq. 5 (L_V): modality targets are the PLG video-level labels.
      naive     L_V + lambda * L'_S (segment-wise BCE against the segment pseudo labels).
      richness  L_V + lambda * L_S (category and segment richness, Eq. 6-8).
    """

    SECTION: ClassVar[str] = "train.loss"

    variant: LossVariant = "richness"
    richness_weight: float = option(0.5, NON_NEGATIVE)  # lambda
    use_category_richness: bool = True  # the cr term (per segment, over classes)
    use_segment_richness: bool = True  # the sr term (per class, over segments)
    smooth_audio: float = option(1.0, UNIT)  # s for the baseline's audio target
    smooth_visual: float = option(0.9, UNIT)  # s for the baseline's visual target


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Optimisation settings for one HAN training run.

    lr_schedule: how the learning rate changes over the epochs (docs/fidelity.md).
      step  the official AVVP-ECCV20 schedule: StepLR, stepped once per epoch, multiplies the lr
            by lr_gamma after every lr_step_size epochs (3e-4, 3e-5 after epoch 10, 3e-6 after 20)
      none  a constant lr
    """

    SECTION: ClassVar[str] = "train"

    lr: float = option(3e-4, POSITIVE)
    lr_schedule: LRSchedule = "step"
    lr_step_size: int = option(10, integer(1))  # epochs between two lr decays (step)
    lr_gamma: float = option(0.1, FRACTION)  # lr factor at each decay (step), in (0, 1]
    batch_size: int = option(32, integer(1))
    epochs: int = option(30, integer(1))
    seed: int = option(0, SEED)
    device: str = option("cpu", DEVICE)
    num_threads: int = option(0, integer(0))  # torch intra-op threads; 0 keeps torch's default
    # "bf16": the training step's matmuls under bf16 autocast (weights, loss and evaluation stay
    # fp32). ~1.5x faster on CPUs with AVX512-BF16 and on GPUs; "fp32" reproduces the paper.
    precision: Precision = "fp32"
    # validation score that picks the best epoch
    select_metric: str = option("seg_type", one_of(SCORE_KEYS, "vaplan.metrics.SCORE_KEYS"))
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class ClassThresholds(Rule):
    """Per-class thresholds: () (use the global tau) or one number in [0, 1] per LLP class.

    Accepted values: a sequence of 25 numbers (class order of `vaplan.categories.CLASSES`);
    on the command line a JSON list, a JSON object {class name: tau} naming all 25 classes,
    "" / "none" / "[]" for (), or "@FILE" with either JSON form, or an object holding the
    option itself ({"plg.visual_threshold_per_class": ...}, what `vaplan sweep plg
    --per-class` saves; docs/ray.md).
    """

    kind: str = "floats"
    text: str = (f"empty (the global threshold) or {NUM_CLASSES} numbers in [0, 1], one per "
                 f"class: a JSON list, a JSON object {{class: tau}} or @FILE.json")

    def check(self, name: str, value: Any) -> Any:
        if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, typing.Iterable):
            raise self.refuse(name, value)
        value = tuple(value)
        if value and len(value) != NUM_CLASSES:
            raise ConfigError(f"{name} must be {self.describe()}, got {len(value)} numbers")
        return tuple(UNIT.check(f"{name}[{i}]", v) for i, v in enumerate(value))

    def parse(self, name: str, raw: str) -> Any:
        from vaplan.categories import CLASS_INDEX

        text, source = raw.strip(), ""
        if text.lower() in ("", "none", "null", "[]", "()"):
            return ()
        if text.startswith("@"):
            source = f" (file {text[1:]})"
            try:
                text = open(text[1:], encoding="utf-8").read()
            except OSError as err:
                raise ConfigError(f"{name}: cannot read {text[1:]}: {err.strerror}") from None
        try:
            value = json.loads(text)
        except ValueError:
            raise ConfigError(f"{name} must be {self.describe()}, got {raw!r}") from None
        if isinstance(value, Mapping) and name in value:
            value = value[name]
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(CLASS_INDEX))
            missing = [c for c in CLASS_INDEX if c not in value]
            if unknown or missing:
                raise ConfigError(f"{name}{source}: " + (f"unknown class {unknown[0]!r}" if unknown
                                                          else f"class {missing[0]!r} missing")
                                  + f"; expected all of {list(CLASS_INDEX)}")
            value = [value[c] for c in CLASS_INDEX]
        try:
            return self.check(name, value)
        except ConfigError as err:
            raise ConfigError(f"{err}{source}") from None


@dataclass(frozen=True)
class PLGConfig(Checked):
    """Pseudo-label generation (Eq. 3-4): thresholds and prompt sets per modality.

    visual_threshold_per_class / audio_threshold_per_class: when not empty, the tau of each
    class (25 numbers, `vaplan.categories.CLASSES` order) instead of the global threshold.
    """

    SECTION: ClassVar[str] = "plg"

    visual_threshold: float = option(0.041, PROBABILITY)
    audio_threshold: float = option(0.038, PROBABILITY)
    visual_threshold_per_class: tuple[float, ...] = option((), ClassThresholds())
    audio_threshold_per_class: tuple[float, ...] = option((), ClassThresholds())
    visual_prompt: str = option("VP1", one_of(VISUAL_PROMPTS, "the visual prompt sets"))
    audio_prompt: str = option("AP2", one_of(AUDIO_PROMPTS, "the audio prompt sets"))


@dataclass(frozen=True)
class PLDConfig(Checked):
    """Pseudo-label denoising (Eq. 10-11) per modality; audio is off by default (paper §5).

    apply: what the retrain step trains on, per enabled modality.
      auto    the denoised labels only when a paired bootstrap over val videos shows their
              quality beats the PLG labels' at `confidence`; otherwise the PLG labels (logged why)
      always  the denoised labels (the paper's recipe)
      never   the PLG labels (PLD still runs and is reported)
    """

    SECTION: ClassVar[str] = "pld"

    apply: PLDApply = "auto"
    confidence: float = option(0.95, PROBABILITY)
    visual: bool = True
    visual_k: int = option(5, PLD_K)
    visual_alpha: float = option(30.0, POSITIVE)
    audio: bool = False
    audio_k: int = option(6, PLD_K)
    audio_alpha: float = option(400.0, POSITIVE)


@dataclass(frozen=True)
class SimConfig(Checked):
    """Size and seed of an LLP-sim dataset (the generative model lives in vaplan.sim).

    num_train is also capped by the real LLP train split (checked when the dataset is built).
    """

    SECTION: ClassVar[str] = "data.sim"

    # train videos (val/test always use the real LLP annotations)
    num_train: int = option(10000, integer(1))
    seed: int = option(0, SEED)
    feature_dtype: FeatureDtype = "float16"
    val_fraction: float = option(1.0, FRACTION)  # share of the real val videos to keep
    test_fraction: float = option(1.0, FRACTION)  # share of the real test videos to keep
    # Real annotations the simulated training truth is drawn from. "val" keeps the test split
    # out of everything the model sees in training; "val+test" only reproduces the old leak.
    pattern_bank: PatternBank = "val"
    # Share of the visual teacher's misses that are teacher-only ("bad frame": blur, darkness,
    # a cut in the one frame CLIP sees) rather than shared with the features (issue 19;
    # docs/llp-sim.md §2.1). 0 keeps every dataset measured before issue 19 bit for bit.
    teacher_only_share: float = option(0.0, UNIT)


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where features and teacher scores come from.

    source=llp needs teacher_cache, and feature_dir unless feature_set=clip_clap (checked by
    `validate_experiment`).
    """

    SECTION: ClassVar[str] = "data"

    source: DataSource = "sim"
    sim: SimConfig = field(default_factory=SimConfig)
    feature_dir: str = ""  # llp: folder of compact per-split feature stores
    teacher_cache: str = ""  # llp: Parquet score cache written by `vaplan teach`
    feature_set: FeatureSet = "official"
    allow_random_teachers: bool = False  # accept a cache scored with random weights
    # Subsets (0 = all): the first N videos of each split file, in its row order
    # (docs/real-data.md). Evaluation on a val/test subset is a smoke check, not the benchmark.
    max_train_videos: int = option(0, integer(0))
    max_eval_videos: int = option(0, integer(0))


@dataclass(frozen=True)
class RegistryConfig(Checked):
    """The promotion gate: a paired bootstrap over val videos (champion vs candidate).

    A candidate becomes champion only when the lower bound of the improvement of the promotion
    metric at `confidence` exceeds `min_improvement` (points); non-finite scores never promote.
    """

    SECTION: ClassVar[str] = "registry"

    confidence: float = option(0.95, PROBABILITY)
    min_improvement: float = option(0.0, NON_NEGATIVE)
    bootstrap_samples: int = option(2000, integer(100))
    seed: int = option(0, SEED)


@dataclass(frozen=True)
class LabelsConfig(Checked):
    """Which labels the tracked pipeline's registered model trains on (docs/pipelines.md
    "Label sources"; the ablation's rows name theirs in `Row.labels`).

    source:
      video  the weak video labels y (Table 5 row 1): train -> evaluate -> register
      ma     MA's modality-aware video-level labels (Wu & Yang 2021, vaplan.ma_labels) made
             from a model trained on y: train (on y) -> ma_labels -> retrain -> ...
      plg    the PLG segment labels: generate_labels -> train -> evaluate -> register
      pld    PLG, then PLD under `pld.apply` (the default, the paper's method)
    video and ma have no segment labels: their loss is baseline|video and video (L_V), set by
    LABEL_RECIPES unless `train.loss.variant` is given.
    """

    SECTION: ClassVar[str] = "labels"

    source: LabelKind = "pld"


@dataclass(frozen=True)
class ExperimentConfig(Checked):
    """Everything one VAPLAN run needs: data, PLG, PLD and training."""

    data: DataConfig = field(default_factory=DataConfig)
    plg: PLGConfig = field(default_factory=PLGConfig)
    pld: PLDConfig = field(default_factory=PLDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)


SECTIONS = (ModelConfig, LossConfig, TrainConfig, PLGConfig, PLDConfig, SimConfig, DataConfig,
            RegistryConfig, LabelsConfig, ExperimentConfig)
# The losses each label source can train with (the others need segment labels, or ignore the
# modality labels MA makes).
SOURCE_LOSSES = {"video": ("baseline", "video"), "ma": ("video",)}
for _cls in SECTIONS:
    _cls.__doc__ = f"{(_cls.__doc__ or '').rstrip()}\n\n    {describe_options(_cls)}\n"


def validate_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """Checks across options (they cannot hold while overrides are applied one at a time)."""
    data, model = cfg.data, cfg.train.model
    if data.source == "llp":
        needed = ["data.teacher_cache"] + (["data.feature_dir"]
                                           if data.feature_set == "official" else [])
        for name in needed:
            if not getattr(data, name.split(".")[1]):
                raise ConfigError(f"data.source=llp needs {name}; set it with --set {name}=PATH")
        star = MODEL_PRESETS["clip_clap"]
        dims = ("audio_dim", "visual_dim", "visual_3d_dim")
        if data.feature_set == "clip_clap" and any(getattr(model, d) != getattr(star, d)
                                                   for d in dims):
            wanted = ", ".join(f"train.model.{d}={getattr(star, d)}" for d in dims)
            got = ", ".join(str(getattr(model, d)) for d in dims)
            raise ConfigError(f"data.feature_set=clip_clap feeds CLAP/CLIP embeddings: set "
                              f"{wanted} (got {got})")
    if model.hidden_dim % model.num_heads:
        raise ConfigError(f"train.model.num_heads must divide train.model.hidden_dim "
                          f"({model.hidden_dim}), got {model.num_heads}")
    source, variant = cfg.labels.source, cfg.train.loss.variant
    if variant not in SOURCE_LOSSES.get(source, (variant,)):
        raise ConfigError(f"labels.source={source} trains on video-level labels without segment "
                          f"labels: train.loss.variant must be "
                          f"{' or '.join(SOURCE_LOSSES[source])}, got {variant}")
    return cfg


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
    """Return a named LLP preset or raise naming the known ones (`preset_error`)."""
    if name not in PRESETS:
        raise preset_error(name, "LLP")
    return PRESETS[name]


def preset_error(name: str, wanted: str) -> ConfigError:
    """The one error for a `--preset` that is not a `wanted` ("LLP" or "AVE") preset: an
    unknown name lists every preset of both tasks (`PRESETS` and AVE's
    `vaplan.ave.config.AVE_PRESETS`, docs/ave.md); the other task's preset says so."""
    from vaplan.ave.config import AVE_PRESETS  # it imports this module (and torch)

    tasks = {"LLP": sorted(PRESETS), "AVE": sorted(AVE_PRESETS)}
    owner = next((task for task, names in tasks.items() if name in names), None)
    if owner is None:
        return ConfigError(f"unknown preset {name!r}; expected one of "
                           f"{tasks['LLP'] + tasks['AVE']}")
    return ConfigError(f"preset {name!r} is an {owner} preset; this takes an {wanted} preset: "
                       f"{tasks[wanted]}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config dataclass (JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `to_dict` output (checked; unknown keys refused)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{getattr(cls, 'SECTION', '') or cls.__name__} must be a mapping of "
                          f"options, got {data!r}")
    hints = _hints(cls)
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown config option {option_name(cls, str(unknown[0]))!r}; "
                          f"expected one of {[option_name(cls, name) for name in names]}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_dict(hint, value)
        kwargs[key] = value
    return cls(**kwargs)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flat {"train.lr": 3e-4, ...} view of a config dataclass or of its nested-dict record
    (e.g. a stored config.json that may predate today's fields), for MLflow params, search
    spaces and config diffs."""
    flat: dict[str, Any] = {}
    for key, value in (cfg if isinstance(cfg, dict) else to_dict(cfg)).items():
        _flatten_into(flat, f"{prefix}{key}", value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, sub_value in value.items():
            _flatten_into(flat, f"{key}.{sub}", sub_value)
    else:
        flat[key] = value


def get_path(cfg: Any, dotted: str) -> Any:
    """The value of the option "a.b.c" of `cfg`."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def replace_path(cfg: Any, dotted: str, value: Any) -> Any:
    """A copy of `cfg` with the option "a.b.c" set to `value` (strings are parsed; checked);
    the copy remembers the options set explicitly in `cfg` (`explicit_options`)."""
    return _remember(_replace_path(cfg, dotted, value), explicit_options(cfg))


def _replace_path(cfg: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ConfigError(f"unknown config option {option_name(cfg, dotted)!r}; expected one of "
                          f"{sorted(option_name(cfg, name) for name in fields)}")
    current = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown config option {option_name(cfg, dotted)!r}: "
                              f"{option_name(cfg, head)} has no sub-options")
        return dataclasses.replace(cfg, **{head: replace_path(current, rest, value)})
    hint, optional = _optional(_hints(type(cfg))[head])
    rule = _rule_of(fields[head], hint)
    if rule is None:
        raise ConfigError(f"{option_name(cfg, head)} is a section; set one of its options, e.g. "
                          f"{option_name(current, dataclasses.fields(current)[0].name)}=...")
    if isinstance(value, str) and not (optional and value.lower() in ("none", "null")):
        value = rule.parse(option_name(cfg, head), value)
    elif isinstance(value, str):
        value = None
    return dataclasses.replace(cfg, **{head: value})


def _split_override(item: str) -> tuple[str, str]:
    """"train.lr = 1e-3" -> ("train.lr", "1e-3"); ConfigError for anything without "="."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.option=value, "
                          f"e.g. train.epochs=3")
    key, raw = item.split("=", 1)
    return key.strip(), raw.strip()


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...],
                    validate: bool = True) -> Any:
    """Apply "key=value" strings, e.g. ["train.lr=1e-3", "plg.visual_prompt=VP2"], and
    remember their options as set explicitly (`explicit_options`, whatever their values);
    then `validate_experiment` (for an ExperimentConfig, unless `validate` is False)."""
    keys = set()
    for item in overrides:
        key, raw = _split_override(item)
        cfg = replace_path(cfg, key, raw)
        keys.add(key)
    cfg = _remember(cfg, explicit_options(cfg) | keys)
    if validate and isinstance(cfg, ExperimentConfig):
        validate_experiment(cfg)
    return cfg


# ---------------------------------------------------------------- recipes and what the user set
# A config remembers which options were set explicitly (`apply_overrides`: `--set`, a row's
# overrides, a sweep's base) in an attribute outside its fields, so it is never compared,
# serialised, logged or part of a key; `replace_path` and pickling keep it. A recipe (a
# backbone's published sizes and training recipe, a label source's loss) fills only the
# options the user did not set whose value is still ExperimentConfig()'s default: a `--set`
# always wins, whatever its value, and so does a preset's own value (sim-tiny's 2 epochs).
# docs/backbones.md "Recipes".
_EXPLICIT = "_explicit_options"


def explicit_options(cfg: Any) -> frozenset[str]:
    """The dotted options set explicitly on `cfg` (by `apply_overrides`), e.g. {"train.lr"}."""
    return getattr(cfg, _EXPLICIT, frozenset())


def _remember(cfg: Any, options: typing.AbstractSet[str]) -> Any:
    if options:
        object.__setattr__(cfg, _EXPLICIT, frozenset(options))
    return cfg


def recipes(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The recipe of `cfg`'s backbone (published sizes + training, `backbone_overrides`) and
    of its label source (LABEL_RECIPES), as "key=value" overrides."""
    return backbone_overrides(cfg.train.model.name) + LABEL_RECIPES[cfg.labels.source]


def with_recipe(cfg: ExperimentConfig, recipe: typing.Iterable[str]) -> ExperimentConfig:
    """`cfg` with each "key=value" of `recipe` applied where the option is not in
    `explicit_options(cfg)` and still at ExperimentConfig()'s default value (not validated:
    the caller's last `apply_overrides` or `validate_experiment` checks the result)."""
    default, explicit = ExperimentConfig(), explicit_options(cfg)
    for item in recipe:
        key, raw = _split_override(item)
        if key not in explicit and get_path(cfg, key) == get_path(default, key):
            cfg = replace_path(cfg, key, raw)
    return cfg


def configure(base: ExperimentConfig, overrides: list[str] | tuple[str, ...] = ()
              ) -> ExperimentConfig:
    """The config of a command: `base` (a preset) with the `--set` overrides, then the
    recipes of the chosen backbone and label source (`recipes`) on the options no override
    set and the preset left at the defaults; checked by `validate_experiment`. Used by
    `vaplan run` / `python -m pipelines`, `vaplan ablation` and the sweeps alike."""
    cfg = apply_overrides(base, overrides, validate=False)
    return validate_experiment(with_recipe(cfg, recipes(cfg)))
