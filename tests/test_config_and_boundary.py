"""Configs round-trip and refuse bad overrides; vaplan imports with ray and mlflow blocked."""

import subprocess
import sys

import pytest

from vaplan import config as cfgmod
from vaplan.config import ExperimentConfig, TrainConfig, apply_overrides, from_dict, to_dict
from vaplan.errors import ConfigError


def test_round_trip_and_flatten():
    cfg = cfgmod.get_preset("sim-small")
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg
    flat = cfgmod.flatten(cfg)
    assert flat["train.lr"] == 3e-4 and flat["plg.visual_threshold"] == 0.041


def test_typed_overrides():
    cfg = apply_overrides(ExperimentConfig(), ["train.lr=1e-3", "pld.audio=true",
                                               "train.loss.variant=naive", "train.epochs=3"])
    assert cfg.train.lr == 1e-3 and cfg.pld.audio is True and cfg.train.epochs == 3
    assert cfg.train.loss.variant == "naive"


# bad overrides, and every other refused value: tests/test_config_validation.py


def test_unknown_keys_refused():
    with pytest.raises(ConfigError, match="unknown config option 'train.momentum'"):
        from_dict(TrainConfig, {"lr": 1.0, "momentum": 0.9})


BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'mlflow'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, vaplan
for mod in pkgutil.walk_packages(vaplan.__path__, 'vaplan.'):
    importlib.import_module(mod.name)
print('ok')
"""


def test_vaplan_imports_without_ray_and_mlflow():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
