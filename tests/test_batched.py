"""Trial groups (vaplan.batched): G members trained as one batched computation equal G separate
train_han runs (dropout off: docs/ray.md "Trial groups"), and a bad member fails alone; the
sweep side (vaplan.trial_groups: --group-size, --gpus-per-trial auto, refused before Ray);
the grouped `vaplan sweep train` on a local CPU-only Ray is in tests/test_ray_sweeps.py."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from vaplan.batched import train_group
from vaplan.config import LossConfig, TrainConfig, get_preset
from vaplan.errors import ConfigError, NonFiniteTrainingError
from vaplan.method import make_pseudo_labels
from vaplan.train import EpochStats, TrainResult, build_targets, train_han
from vaplan.trial_groups import (GroupReport, MemberGrid, auto_gpus_per_trial, check_group_size,
                                 check_group_space, pack, parse_gpus_per_trial)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(sim_tiny):
    """sim-tiny's split (96 train, 65 val videos, full feature dims), a small HAN without
    dropout, the PLG labels and the weak labels."""
    model = dataclasses.replace(get_preset("sim-tiny").train.model, hidden_dim=64, ffn_dim=64,
                                dropout=0.0)
    base = TrainConfig(epochs=2, batch_size=32, lr=1e-3, lr_step_size=1, num_threads=1,
                       model=model)
    pseudo = build_targets(sim_tiny.train,
                           make_pseudo_labels(sim_tiny, "train", get_preset("sim-tiny").plg))
    return sim_tiny, base, pseudo, build_targets(sim_tiny.train, None)


def _relative_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    diff = sum(float(((sa[k] - sb[k]) ** 2).sum()) for k in sa) ** 0.5
    return diff / sum(float((sa[k] ** 2).sum()) for k in sa) ** 0.5


def test_three_members_equal_three_separate_runs(setup):
    """Different seeds, a richness weight, another lr + no schedule + another loss variant and
    label set: losses per epoch, lr, val scores, best epoch and final weights match."""
    data, base, pseudo, weak = setup
    cfgs = [dataclasses.replace(base, seed=0),
            dataclasses.replace(base, seed=1, loss=LossConfig(richness_weight=0.5)),
            dataclasses.replace(base, seed=2, lr=3e-4, lr_schedule="none",
                                loss=LossConfig(variant="baseline"))]
    targets = [pseudo, pseudo, weak]
    separate = [train_han(c, data.train, t, data.val, progress=False)
                for c, t in zip(cfgs, targets)]
    seen = []
    group = train_group(cfgs, data.train, targets, data.val,
                        on_epoch=lambda g, stats: seen.append((g, stats.epoch)))
    assert seen == [(g, e) for e in (1, 2) for g in range(3)]
    for one, member in zip(separate, group):
        assert isinstance(member, TrainResult) and member.config == one.config
        assert [h.lr for h in member.history] == [h.lr for h in one.history]
        np.testing.assert_allclose([h.train_loss for h in member.history],
                                   [h.train_loss for h in one.history], rtol=1e-5)
        for mine, theirs in zip(member.history, one.history):
            assert mine.val == pytest.approx(theirs.val, abs=0.2)  # percent
        assert (member.best_epoch, member.best_score) == pytest.approx(
            (one.best_epoch, one.best_score), abs=0.2)
        assert _relative_difference(member.model, one.model) < 1e-3
        assert not member.model.training
    assert [h.lr for h in group[0].history] == pytest.approx([1e-3, 1e-4])  # StepLR(1)
    assert group[0].history[0].train_loss != group[1].history[0].train_loss  # own seeds


def test_members_that_cannot_share_a_computation_are_refused(setup):
    data, base, pseudo, _ = setup
    for change, words in ((dict(batch_size=8), "group member 1: train.batch_size=8 differs "
                           "from member 0 (32)"),
                          (dict(device="meta"), "train.device"),
                          (dict(model=dataclasses.replace(base.model, hidden_dim=32)),
                           "group member 1: train.model=")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            train_group([base, dataclasses.replace(base, **change)], data.train,
                        [pseudo, pseudo], data.val)
    with pytest.raises(ConfigError, match="at least one member"):
        train_group([], data.train, [], data.val)
    with pytest.raises(ValueError, match="2 group members but 1 target sets"):
        train_group([base, base], data.train, [pseudo], data.val)
    bad = dataclasses.replace(pseudo, video_labels=pseudo.video_labels[:5])
    with pytest.raises(ValueError, match="targets have 5 rows but split 'train' has 96"):
        train_group([base], data.train, [bad], data.val)


def test_a_diverging_member_fails_alone_and_members_keep_their_epochs(setup):
    """lr 1e30 -> that member's result is train_han's NonFiniteTrainingError; a member with
    fewer epochs stops after its last; the others are unaffected."""
    data, base, pseudo, _ = setup
    cfgs = [dataclasses.replace(base, epochs=2), dataclasses.replace(base, lr=1e30),
            dataclasses.replace(base, epochs=1, seed=3)]
    group = train_group(cfgs, data.train, [pseudo] * 3, data.val)
    assert isinstance(group[1], NonFiniteTrainingError)
    assert "epoch 1, step" in str(group[1]) and "lower train.lr (now 1e+30)" in str(group[1])
    assert [len(r.history) for r in (group[0], group[2])] == [2, 1]
    alone = train_han(cfgs[2], data.train, pseudo, data.val, progress=False)
    assert group[2].history[0].train_loss == pytest.approx(alone.history[0].train_loss,
                                                           rel=1e-5)


# ------------------------------------------------- trial groups in a sweep (vaplan.trial_groups)

def test_gpus_per_trial_option_and_auto_rule():
    assert parse_gpus_per_trial("auto") is None and parse_gpus_per_trial(" AUTO ") is None
    assert parse_gpus_per_trial("0.25") == 0.25 and parse_gpus_per_trial(2) == 2.0
    for bad in ("-1", "1.5", "nan", "inf", "many"):
        with pytest.raises(ConfigError, match=re.escape(
                f"--gpus-per-trial must be 'auto' or a number >= 0 (a fraction up to 1, or "
                f"whole GPUs), got {bad!r}")):
            parse_gpus_per_trial(bad)
    # (cluster GPUs, cluster CPUs, trials, cpus per trial, max concurrent) -> GPUs per trial
    assert auto_gpus_per_trial(0, 16, 8, 1) == 0.0  # CPU-only cluster
    assert auto_gpus_per_trial(1, 16, 8, 1) == 1 / 8  # 8 trials share the one GPU
    assert auto_gpus_per_trial(1, 16, 8, 1, max_concurrent=2) == 0.5
    assert auto_gpus_per_trial(1, 4, 8, 2) == 0.5  # CPUs allow 2 at once
    assert auto_gpus_per_trial(2, 16, 3, 1) == 0.5  # ceil(3 / 2) per GPU
    assert auto_gpus_per_trial(8, 16, 4, 1) == 1.0  # never more than one GPU per trial


def test_group_size_packing_and_shared_options():
    assert pack(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="--group-size must be an integer >= 1"):
            check_group_size(bad)
    check_group_space(["train.lr", "train.model.dropout"], 1)  # no group: anything goes
    with pytest.raises(ConfigError, match=r"--group-size 4: the members of a group share "
                       r"train.model, .*; do not search train.batch_size, train.model.dropout"):
        check_group_space(["train.lr", "train.batch_size", "train.model.dropout"], 4)


def test_group_report_and_member_grid():
    """Per-member reports (a failed member keeps its last metrics and its error) and the grid
    the sweep reads: one result per member, the best finite one wins."""
    cfg = TrainConfig()
    stats = lambda score, epoch: EpochStats(epoch, 1.0, {"seg_type": score}, 0.5, 3e-4)  # noqa
    report = GroupReport([cfg, cfg])
    first = report.update(1, {0: stats(10.0, 1), 1: stats(20.0, 1)})
    assert first["epoch/val/seg_type"] == 20.0 and first["best/val/seg_type"] == 20.0
    last = report.update(2, {0: stats(15.0, 2), 1: NonFiniteTrainingError("diverged")})
    assert last["epoch/val/seg_type"] == 15.0 and last["best/val/seg_type"] == 20.0
    assert last["members"]["0"]["best/val/seg_type"] == 15.0
    assert last["members"]["0"]["epoch"] == 2 and last["members"]["1"]["epoch"] == 1
    assert last["members"]["1"]["error"] == "NonFiniteTrainingError: diverged"

    class Result:  # what Tune's Result offers the sweep
        def __init__(self, config, metrics, error=None):
            self.config, self.metrics, self.error = config, metrics, error

    grid = MemberGrid.of([Result({"group": [{"train.lr": 1e-3}, {"train.lr": 1e-4}]},
                                 {**last, "trial_id": "t_00000"}),
                          Result({"group": [{"train.lr": 5e-4}]}, {"trial_id": "t_00001"},
                                 RuntimeError("injected"))])
    assert len(grid) == 3 and (grid.num_errors, grid.num_terminated) == (2, 1)
    assert [r.metrics["trial_id"] for r in grid] == ["t_00000/0", "t_00000/1", "t_00001/0"]
    assert [r.error for r in grid] == [None, "NonFiniteTrainingError: diverged", "injected"]
    best = grid.get_best_result("best/val/seg_type")
    assert best.config == {"train.lr": 1e-3} and best.metrics["epoch/val/seg_type"] == 15.0
    plain = [Result({"train.lr": 1e-3}, {})]
    assert MemberGrid.of(plain) is plain  # no group: Tune's grid as it is


def test_sweep_train_group_options_refused_before_ray(tmp_path, capsys, monkeypatch):
    """Bad --group-size / --gpus-per-trial, or a group searching a shared option: one line,
    exit 2, before Ray or a store exists (the grouped sweep itself: tests/test_ray_sweeps.py)."""
    import ray

    from vaplan.cli import run_app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["sweep", "train", "--preset", "sim-tiny", "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db", "--storage-path", str(tmp_path / "ray"),
            "--address", "local"]
    for bad, words in ((["--group-size", "0"], "--group-size must be an integer >= 1, got 0"),
                       (["--gpus-per-trial", "-1"], "--gpus-per-trial must be 'auto' or"),
                       (["--group-size", "2", "--space", "train.batch_size=8,16"],
                        "do not search train.batch_size")):
        assert run_app([*args, *bad]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not ray.is_initialized() and not list(tmp_path.iterdir())

def test_vmap_attention_equals_torch_multihead_attention():
    """The group's attention (projections on the contiguous (B, T, E) input) gives torch's
    nn.MultiheadAttention outputs; masks fall back to torch's forward."""
    from vaplan.batched import _vmap_attention

    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()
    query, other = torch.randn(3, 10, 16), torch.randn(3, 10, 16)
    expected = attention(query, other, other, need_weights=False)[0]
    got, weights = _vmap_attention(attention, query, other, other, need_weights=False)
    assert weights is None and torch.allclose(got, expected, atol=1e-6)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    masked = _vmap_attention(attention, query, other, other, need_weights=False, attn_mask=mask)
    assert torch.allclose(masked[0], expected, atol=1e-6)
