"""One validation for all configuration: direct construction, from_dict (checkpoints, MLflow
records), --set overrides, sweep --space values and presets refuse the same values with the same
message naming the dotted option; every CLI ends a user error with one line and exit status 2,
before any MLflow store or Ray exists."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from vaplan import config as cfgmod
from vaplan.config import (DataConfig, ExperimentConfig, LossConfig, ModelConfig, PLDConfig,
                           PLGConfig, RegistryConfig, SimConfig, TrainConfig, apply_overrides,
                           from_dict, get_preset, to_dict, validate_experiment)
from vaplan.errors import ConfigError, UserError

ROOT = Path(__file__).resolve().parents[1]
INF, NAN = math.inf, math.nan

# ------------------------------------------------------------ each range family, refused

BAD = [
    # floats: finite and > 0 / >= 0 / in [0, 1] / in (0, 1) / in (0, 1]
    (TrainConfig, {"lr": INF}, "train.lr must be a finite number > 0, got inf"),
    (TrainConfig, {"lr": NAN}, "train.lr must be a finite number > 0, got nan"),
    (TrainConfig, {"lr": -1.0}, "train.lr must be a finite number > 0, got -1.0"),
    (TrainConfig, {"lr": 0}, "train.lr must be a finite number > 0, got 0"),
    (LossConfig, {"richness_weight": -5.0},
     "train.loss.richness_weight must be a finite number >= 0, got -5.0"),
    (LossConfig, {"smooth_audio": 1.5}, "train.loss.smooth_audio must be a number in [0, 1]"),
    (ModelConfig, {"dropout": 1.0}, "train.model.dropout must be a number in [0, 1), got 1.0"),
    (PLGConfig, {"visual_threshold": 0.0}, "plg.visual_threshold must be a number in (0, 1)"),
    (PLGConfig, {"audio_threshold": 1.0}, "plg.audio_threshold must be a number in (0, 1)"),
    (PLDConfig, {"visual_alpha": 0.0}, "pld.visual_alpha must be a finite number > 0, got 0.0"),
    (PLDConfig, {"audio_alpha": INF}, "pld.audio_alpha must be a finite number > 0, got inf"),
    (PLDConfig, {"confidence": 1.0}, "pld.confidence must be a number in (0, 1), got 1.0"),
    (SimConfig, {"val_fraction": 0.0}, "data.sim.val_fraction must be a number in (0, 1]"),
    (SimConfig, {"test_fraction": 1.5}, "data.sim.test_fraction must be a number in (0, 1]"),
    (RegistryConfig, {"confidence": 0.0}, "registry.confidence must be a number in (0, 1)"),
    (RegistryConfig, {"min_improvement": -0.1},
     "registry.min_improvement must be a finite number >= 0, got -0.1"),
    (RegistryConfig, {"min_improvement": INF}, "registry.min_improvement must be a finite"),
    # ints: >= 1 / >= 0 / in lo..hi; floats and bools are not integers
    (TrainConfig, {"epochs": 0}, "train.epochs must be an integer >= 1, got 0"),
    (TrainConfig, {"epochs": 1.5}, "train.epochs must be an integer >= 1, got 1.5"),
    (TrainConfig, {"epochs": True}, "train.epochs must be an integer >= 1, got True"),
    (TrainConfig, {"batch_size": 0}, "train.batch_size must be an integer >= 1, got 0"),
    (TrainConfig, {"seed": -1}, "train.seed must be an integer in 0..4294967295, got -1"),
    (TrainConfig, {"num_threads": -1}, "train.num_threads must be an integer >= 0, got -1"),
    (ModelConfig, {"hidden_dim": 0}, "train.model.hidden_dim must be an integer >= 1"),
    (ModelConfig, {"visual_3d_dim": -1}, "train.model.visual_3d_dim must be an integer >= 0"),
    (ModelConfig, {"num_heads": 0}, "train.model.num_heads must be an integer >= 1"),
    (ModelConfig, {"num_classes": 10}, "train.model.num_classes must be 25"),
    (PLDConfig, {"visual_k": 0}, "pld.visual_k must be an integer in 1..10, got 0"),
    (PLDConfig, {"audio_k": 11}, "pld.audio_k must be an integer in 1..10, got 11"),
    (SimConfig, {"num_train": 0}, "data.sim.num_train must be an integer >= 1, got 0"),
    (RegistryConfig, {"bootstrap_samples": 99},
     "registry.bootstrap_samples must be an integer >= 100, got 99"),
    (RegistryConfig, {"seed": -1}, "registry.seed must be an integer in 0..4294967295"),
    # bools: real bools only (strings are parsed by --set, not here)
    (PLDConfig, {"visual": 1}, "pld.visual must be true or false, got 1"),
    (LossConfig, {"use_segment_richness": "yes"},
     "train.loss.use_segment_richness must be true or false, got 'yes'"),
    # literals and named choices
    (TrainConfig, {"device": "gpu"}, "train.device must be 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    (TrainConfig, {"precision": "fp16"}, "train.precision must be one of ['fp32', 'bf16']"),
    (TrainConfig, {"select_metric": "acc"}, "train.select_metric must be one of ['seg_a'"),
    (LossConfig, {"variant": "magic"}, "train.loss.variant must be one of"),
    (PLGConfig, {"visual_prompt": "AP1"},
     "plg.visual_prompt must be one of ['VP1', 'VP2', 'VP3', 'VP4'] (the visual prompt sets), "
     "got 'AP1'"),
    (PLGConfig, {"audio_prompt": "VP9"}, "plg.audio_prompt must be one of ['AP1', 'AP2']"),
    (PLDConfig, {"apply": "sometimes"}, "pld.apply must be one of ['auto', 'always', 'never']"),
    (SimConfig, {"feature_dtype": "float64"}, "data.sim.feature_dtype must be one of"),
    (SimConfig, {"pattern_bank": "test"}, "data.sim.pattern_bank must be one of"),
    (DataConfig, {"source": "web"}, "data.source must be one of ['sim', 'llp']"),
    (DataConfig, {"feature_set": "vggish"}, "data.feature_set must be one of"),
    (DataConfig, {"feature_dir": 3}, "data.feature_dir must be a string, got 3"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD,
                         ids=[f"{c.__name__}-{next(iter(k))}-{k[next(iter(k))]!r}"
                              for c, k, _ in BAD])
def test_direct_construction_refuses_each_range_family(cls, kwargs, message):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert message in str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)


def test_accepted_values_are_normalised():
    cfg = TrainConfig(lr=1, epochs=np.int64(3), seed=np.uint32(7), device="cuda:1")
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert cfg.epochs == 3 and type(cfg.epochs) is int and type(cfg.seed) is int
    assert type(PLDConfig(visual=np.bool_(False)).visual) is bool
    assert type(PLGConfig(visual_threshold=np.float32(0.05)).visual_threshold) is float
    assert ModelConfig(visual_3d_dim=0, dropout=0.0).visual_3d_dim == 0
    for name in cfgmod.PRESETS:
        assert get_preset(name) is cfgmod.PRESETS[name]  # every preset passed the checks


def test_every_option_has_a_rule():
    """No option escapes: int/float fields declare bounds; the rest are typed by annotation."""
    for cls in cfgmod.SECTIONS:
        hints = typing.get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            hint = hints[fld.name]
            if dataclasses.is_dataclass(hint):
                continue
            rule = cfgmod.option_rule(cls, fld.name)
            if hint in (int, float):
                assert "rule" in fld.metadata, f"{cls.__name__}.{fld.name} has no declared range"
            assert rule.describe() in cls.__doc__  # documented in the dataclass docstring


def test_nested_sections_are_type_checked():
    with pytest.raises(ConfigError, match="train must be a TrainConfig section"):
        ExperimentConfig(train={"lr": 1.0})
    with pytest.raises(ConfigError, match="train.model is a section; set one of its options"):
        apply_overrides(ExperimentConfig(), ["train.model=3"])


# ------------------------------------------------------------ from_dict: checkpoints, records

def test_from_dict_of_a_checkpoint_with_a_bad_value_names_the_option():
    payload = to_dict(TrainConfig())  # what save_checkpoint stores
    payload["model"]["dropout"] = 2.0
    with pytest.raises(ConfigError, match=r"train.model.dropout must be a number in \[0, 1\), "
                                          r"got 2.0"):
        from_dict(TrainConfig, payload)
    record = to_dict(get_preset("sim-tiny"))  # what the registry's config.json holds
    record["pld"]["visual_k"] = 0
    with pytest.raises(ConfigError, match="pld.visual_k must be an integer in 1..10, got 0"):
        from_dict(ExperimentConfig, record)
    record = to_dict(get_preset("sim-tiny"))
    record["train"]["model"]["heads"] = 2
    with pytest.raises(ConfigError, match="unknown config option 'train.model.heads'"):
        from_dict(ExperimentConfig, record)
    with pytest.raises(ConfigError, match="train.epochs must be an integer >= 1, got '3'"):
        from_dict(TrainConfig, {"epochs": "3"})  # JSON values are typed, not parsed
    with pytest.raises(ConfigError, match="train must be a mapping of options"):
        from_dict(TrainConfig, [1, 2])


def test_round_trip_of_every_preset():
    for cfg in cfgmod.PRESETS.values():
        assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


# ------------------------------------------------------------ --set strings

@pytest.mark.parametrize("override, attr, expected", [
    ("train.lr=1e-3", "train.lr", 1e-3), ("train.lr=2", "train.lr", 2.0),
    ("pld.audio=yes", "pld.audio", True), ("pld.visual=0", "pld.visual", False),
    ("pld.visual=False", "pld.visual", False), ("train.epochs= 4 ", "train.epochs", 4),
    ("train.device=cuda:0", "train.device", "cuda:0"),
])
def test_override_strings_are_parsed(override, attr, expected):
    value = cfgmod.get_path(apply_overrides(ExperimentConfig(), [override]), attr)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("override, message", [
    ("train.lr=fast", "train.lr must be a finite number > 0, got 'fast'"),
    ("train.loss.variant=magic", "train.loss.variant must be one of"),
    ("pld.audio=maybe", "pld.audio must be true or false, got 'maybe'"),
    ("train.lr", "must look like section.option=value"),
    ("train.epochs=1.5", "train.epochs must be an integer >= 1, got '1.5'"),
    ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
    ("train.lr=inf", "train.lr must be a finite number > 0, got inf"),
    ("train.lr=nan", "train.lr must be a finite number > 0, got nan"),
    ("pld.audio=2", "pld.audio must be true or false, got '2'"),
    ("pld.visual_k=0", "pld.visual_k must be an integer in 1..10, got 0"),
    ("train.model.dropout=1", "train.model.dropout must be a number in [0, 1), got 1.0"),
    ("nosuch.x=1", "unknown config option 'nosuch.x'"),
    ("train.lr.x=1", "unknown config option 'train.lr.x'"),
    ("=1", "unknown config option ''"),
])
def test_bad_override_strings(override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(get_preset("sim-tiny"), [override])
    assert message in str(err.value)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown preset 'nosuch'; expected one of"):
        get_preset("nosuch")


# ------------------------------------------------------------ checks across options

def test_cross_field_checks_run_after_the_last_override():
    with pytest.raises(ConfigError, match="data.source=llp needs data.teacher_cache"):
        apply_overrides(get_preset("llp"), [])
    with pytest.raises(ConfigError, match="data.source=llp needs data.feature_dir"):
        apply_overrides(get_preset("llp"), ["data.teacher_cache=/c"])
    ok = apply_overrides(get_preset("llp"), ["data.teacher_cache=/c", "data.feature_dir=/f"])
    assert ok.data.feature_dir == "/f"
    star = ["train.model.audio_dim=512", "train.model.visual_dim=512",
            "train.model.visual_3d_dim=0"]
    with pytest.raises(ConfigError, match="data.feature_set=clip_clap feeds CLAP/CLIP"):
        apply_overrides(get_preset("llp"), ["data.teacher_cache=/c", "data.feature_set=clip_clap"])
    apply_overrides(get_preset("llp"), ["data.teacher_cache=/c", "data.feature_set=clip_clap",
                                        *star])
    # either order works: the check sees the final config, not each step
    for order in (["train.model.num_heads=3", "train.model.hidden_dim=33"],
                  ["train.model.hidden_dim=33", "train.model.num_heads=3"]):
        assert apply_overrides(ExperimentConfig(), order).train.model.num_heads == 3
    with pytest.raises(ConfigError, match="train.model.num_heads must divide "
                                          "train.model.hidden_dim \\(512\\), got 3"):
        apply_overrides(ExperimentConfig(), ["train.model.num_heads=3"])
    with pytest.raises(ConfigError, match="num_heads must divide"):
        validate_experiment(ExperimentConfig(train=TrainConfig(model=ModelConfig(num_heads=5))))


def test_pipeline_config_checks_its_fields_and_the_experiment():
    from pipelines.config import PipelineConfig, pipeline_config_from_preset

    with pytest.raises(ConfigError, match="promote_metric must be one of \\['val/seg_a'"):
        PipelineConfig(promote_metric="test/seg_type")
    with pytest.raises(ConfigError, match="model_name must be a non-empty name, got ''"):
        PipelineConfig(model_name="")
    with pytest.raises(ConfigError, match="timeline_videos must be an integer >= 0"):
        PipelineConfig(timeline_videos=-1)
    with pytest.raises(ConfigError, match="data.source=llp needs data.teacher_cache"):
        PipelineConfig(experiment=get_preset("llp"))
    with pytest.raises(ConfigError, match="train.lr must be a finite number > 0, got inf"):
        pipeline_config_from_preset("sim-tiny", ["train.lr=inf"])
    assert PipelineConfig(tracking_uri=None).tracking_uri is None


# ------------------------------------------------------------ sweep spaces: the same check

@pytest.mark.parametrize("item, override", [
    ("train.lr=1e-4,-1", "train.lr=-1"),
    ("train.lr=loguniform:0,1e-3", "train.lr=0"),
    ("train.epochs=randint:0,3", "train.epochs=0"),
    ("train.batch_size=choice:8,0", "train.batch_size=0"),
    ("train.loss.richness_weight=-5", "train.loss.richness_weight=-5"),
    ("pld.visual_k=0,5", "pld.visual_k=0"),
    ("pld.audio_alpha=uniform:100,inf", "pld.audio_alpha=inf"),
    ("plg.visual_threshold=0.04,1.5", "plg.visual_threshold=1.5"),
    ("plg.audio_prompt=VP1", "plg.audio_prompt=VP1"),
    ("train.nope=1", "train.nope=1"),
])
def test_space_values_get_the_same_message_as_set(item, override):
    from vaplan import sweeps as spaces

    base = get_preset("sim-tiny")
    with pytest.raises(ConfigError) as expected:
        apply_overrides(base, [override])
    with pytest.raises(spaces.SpaceError) as err:
        spaces.build_space({}, None, [item], base, ("train.", "plg.", "pld."))
    assert str(err.value) == str(expected.value)


def test_space_values_are_typed_by_the_config():
    from vaplan import sweeps as spaces

    base = get_preset("sim-tiny")
    space = spaces.build_space({}, {"train.lr": {"grid_search": [1, 2e-4]}, "pld.visual": True},
                               ["pld.visual_k=randint:3,7"], base, ("train.", "pld."))
    assert space["train.lr"] == {"grid_search": [1.0, 2e-4]}
    assert type(space["train.lr"]["grid_search"][0]) is float
    assert space["pld.visual_k"] == {"randint": [3, 7]} and space["pld.visual"] is True
    json_space = {"pld.visual_k": {"grid_search": [5, 5.5]}}
    with pytest.raises(spaces.SpaceError, match="pld.visual_k must be an integer in 1..10, "
                                                "got 5.5"):
        spaces.build_space({}, json_space, [], base, ("pld.",))
    bool_space = {"pld.audio": {"grid_search": [True, 1]}}
    with pytest.raises(spaces.SpaceError, match="pld.audio must be true or false, got 1"):
        spaces.build_space({}, bool_space, [], base, ("pld.",))


# ------------------------------------------------------------ library guards delegate

def test_library_guards_use_the_config_rules():
    from vaplan.denoise import check_pld_options
    from vaplan.pseudo_labels import check_threshold

    with pytest.raises(ConfigError, match=r"threshold must be a number in \(0, 1\), got 1.0"):
        check_threshold("threshold", 1.0)
    with pytest.raises(ConfigError) as err:
        check_pld_options(11, 30.0, prefix="pld.visual_")
    with pytest.raises(ConfigError) as same:
        PLDConfig(visual_k=11)
    assert str(err.value) == str(same.value)
    with pytest.raises(ConfigError, match="k must be an integer in 1..4, got 5"):
        check_pld_options(5, 30.0, num_segments=4)
    check_pld_options(np.int64(3), np.float32(2.0))


# ------------------------------------------------------------ the CLI error contract

def test_exits_on_user_error_prints_one_line_and_keeps_other_tracebacks(capsys):
    from vaplan.cli import exits_on_user_error

    @exits_on_user_error
    def refuses(argv=None):
        raise ConfigError("train.lr must be a finite number > 0,\n got inf")

    @exits_on_user_error
    def breaks(argv=None):
        raise RuntimeError("a bug")

    assert refuses() == 2
    assert capsys.readouterr().err == "error: train.lr must be a finite number > 0, got inf\n"
    with pytest.raises(RuntimeError, match="a bug"):
        breaks()


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/store/mlflow.db",
           "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _assert_one_line_refusal(out: subprocess.CompletedProcess, words: str, cwd: Path) -> None:
    lines = out.stderr.splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert list(cwd.iterdir()) == [], "a refused command must not create a store or any file"


PIPELINE_REFUSALS = [
    (["--set", "train.epochs=0"], "train.epochs must be an integer >= 1, got 0"),
    (["--set", "train.lr=-1"], "train.lr must be a finite number > 0, got -1.0"),
    (["--set", "train.lr=inf"], "train.lr must be a finite number > 0, got inf"),
    (["--set", "train.batch_size=0"], "train.batch_size must be an integer >= 1, got 0"),
    (["--set", "pld.visual_k=0"], "pld.visual_k must be an integer in 1..10, got 0"),
    (["--set", "train.loss.richness_weight=-5"], "train.loss.richness_weight must be a finite"),
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["--set", "nosuch.x=1"], "unknown config option 'nosuch.x'"),
    (["--set", "train.lr"], "override 'train.lr' must look like section.option=value"),
    (["--promote-metric", "test/seg_type"], "promote_metric must be one of"),
    (["--bogus"], "No such option: --bogus"),
]


@pytest.mark.parametrize("args, words", PIPELINE_REFUSALS,
                         ids=[" ".join(a) for a, _ in PIPELINE_REFUSALS])
def test_pipelines_cli_refuses_in_one_line_before_any_store(args, words, tmp_path):
    preset = [] if "--preset" in args else ["--preset", "sim-tiny"]
    _assert_one_line_refusal(_run(["-m", "pipelines", *preset, *args], tmp_path), words,
                             tmp_path)


@pytest.mark.parametrize("args, words", [
    (["ablation", "--preset", "sim-tiny", "--set", "train.epochs=0"],
     "train.epochs must be an integer >= 1, got 0"),
    (["ablation", "--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["evaluate", "--bogus"], "No such option: --bogus"),
    (["pull"], "Missing option '--dest'"),
])
def test_vaplan_cli_refuses_in_one_line(args, words, tmp_path):
    _assert_one_line_refusal(_run(["-m", "vaplan.cli", *args], tmp_path), words, tmp_path)


def test_ray_job_refuses_a_bad_space_before_ray_starts(tmp_path):
    out = _run(["-m", "ray_jobs.tune_pld", "--preset", "sim-tiny", "--address", "local",
                "--storage-path", str(tmp_path / "ray"), "--space", "pld.visual_k=0,5"], tmp_path)
    _assert_one_line_refusal(out, "pld.visual_k must be an integer in 1..10, got 0", tmp_path)
    out = _run(["-m", "ray_jobs.tune_train", "--preset", "sim-tiny", "--storage-path",
                str(tmp_path / "ray"), "--set", "train.lr=inf"], tmp_path)
    _assert_one_line_refusal(out, "train.lr must be a finite number > 0, got inf", tmp_path)
    out = _run(["-m", "ray_jobs.pipeline", "--preset", "sim-tiny", "--storage-path",
                str(tmp_path / "ray"), "--promote-metric", "val/nope"], tmp_path)
    _assert_one_line_refusal(out, "promote_metric must be one of", tmp_path)
