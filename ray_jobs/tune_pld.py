"""Sweep PLD's K and alpha per modality -> denoised label quality on val.

Stage one runs once in the driver (the pipeline's `generate_labels` + `train` steps under the
sweep's parent run, reused when an earlier run has them, or `--checkpoint`); each trial only
denoises its predictions (Eq. 10-11) and scores: `pld/val/<modality>/...`,
`gain/<modality>/average` (vs PLG, logged as `plg/val/...` on the parent) and the objective
`pld/val/average`. Default: visual K 3..7 x alpha 10..50, audio K 5..7 x alpha 200..600 (225
trials, `pld.apply=always`) plus one "no denoising" trial (`pld.apply=never`: the PLG labels,
the same objective), so the winner is "no denoising" when every K/alpha lowers label quality.
A trial scores the val labels the retrain step would train on (`vaplan.method.choose_labels`).
`--retrain-top N` retrains HAN on the N best settings (sweep `<name>-retrain`, ASHA).

examples:
  python -m ray_jobs.tune_pld --preset sim-small [--checkpoint han.pt] [--retrain-top 2]
  python -m ray_jobs.tune_pld --preset sim-tiny --space pld.visual_k=3,5 --space pld.audio_k=6
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from ray_jobs import sweep, tune_train
from vaplan.cli import exits_on_user_error
from vaplan.config import to_dict
from vaplan.data.dataset import load_dataset
from vaplan.errors import UserError
from vaplan.sweep_options import EXIT_INTERRUPTED, SweepSpec, parser, plan
from vaplan.sweep_scores import PLD_OBJECTIVE as OBJECTIVE, chosen_labels, no_denoising, pld_scores
from vaplan.sweeps import STATE_FILE, SweepState, sweep_folder
DEFAULT_SPACE = {"pld.visual": True, "pld.audio": True, "pld.apply": {"grid_search": ["always"]},
                 "pld.visual_k": {"grid_search": [3, 4, 5, 6, 7]},
                 "pld.visual_alpha": {"grid_search": [10.0, 20.0, 30.0, 40.0, 50.0]},
                 "pld.audio_k": {"grid_search": [5, 6, 7]},
                 "pld.audio_alpha": {"grid_search": [200.0, 400.0, 600.0]}}


def pld_body(experiment, stage) -> None:
    from ray import tune

    tune.report(pld_scores(stage, experiment.pld))


def retrain_body(experiment, dataset, stage) -> None:
    """Retrain HAN on the train labels this trial's PLD setting gives (`chosen_labels`)."""
    tune_train.fit_and_report(experiment.train, dataset,
                              chosen_labels(stage, experiment.pld, "train"))


SPEC = SweepSpec(job="tune_pld", sections=("pld.",), default_space=DEFAULT_SPACE,
                 metric=OBJECTIVE, objective=OBJECTIVE, body=pld_body, trains=True,
                 points=no_denoising)
RETRAIN_SPEC = SweepSpec(job="tune_pld_retrain", sections=("pld",), default_space={},
                         metric=tune_train.METRIC, objective=tune_train.OBJECTIVE,
                         body=retrain_body, scheduler=tune_train.asha, trains=True)


def stage_one(dataset, state: SweepState, checkpoint: str | None, with_train: bool):
    """The stage-one model (trained by pipeline steps under the parent, or loaded), its
    (N, T, 2, C) predictions and PLG labels of val (and train); the PLG baseline logged."""
    from pipelines import steps, tracking
    from pipelines.reuse import StepContext
    from vaplan.method import make_pseudo_labels
    from vaplan.pseudo_labels import pseudo_label_report
    from vaplan.sweep_scores import plg_scores
    from vaplan.train import load_checkpoint, predict

    experiment, device = state.experiment, state.experiment.train.device
    with tempfile.TemporaryDirectory(prefix="vaplan-stage-one-") as tmp:
        if checkpoint:
            key, source = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest(), checkpoint
        else:
            ctx = StepContext(state.experiment_id, state.parent_run_id, Path(tmp), True, False)
            trained = steps.train(ctx, dataset, experiment.train,
                                  steps.generate_labels(ctx, dataset, experiment.plg))
            key, source = trained.digest(steps.CHECKPOINT), trained.run_id
            checkpoint = trained.path(steps.CHECKPOINT)
        model, _, _ = load_checkpoint(checkpoint, device=device)
    val, labels = dataset.val, make_pseudo_labels(dataset, "val", experiment.plg)
    plg = pseudo_label_report(labels, val.gt_audio, val.gt_visual)
    stage = SimpleNamespace(val=val, labels_val=labels, plg=plg,
                            prob_val=predict(model, val.features, device=device).prob_seg)
    if with_train:
        stage.prob_train = predict(model, dataset.train.features, device=device).prob_seg
        stage.labels_train = make_pseudo_labels(dataset, "train", experiment.plg)
    baseline = plg_scores(plg)
    tracking.log_scores(baseline, run_id=state.parent_run_id)
    print(f"stage one: model {key[:12]} from {source}; PLG labels on val (what {OBJECTIVE} must "
          f"beat): average {baseline['plg/val/average']:.2f}", flush=True)
    return stage


def stage_data(dataset, checkpoint: str | None, with_train: bool):
    """A data_fn making stage one once per process (the PLD sweep and the retraining)."""
    made: dict = {}

    def data(state: SweepState) -> dict:
        made["stage"] = made.get("stage") or stage_one(dataset, state, checkpoint, with_train)
        return {"stage": made["stage"]}
    return data


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    p = parser(SPEC, __doc__, asha=True)
    p.add_argument("--checkpoint", help="stage-one checkpoint (default: train it)")
    p.add_argument("--retrain-top", type=int, default=0, metavar="N",
                   help="retrain HAN on the denoised labels of the N best settings")
    opts = p.parse_args(argv)
    if opts.checkpoint and not Path(opts.checkpoint).is_file():
        raise UserError(f"--checkpoint {opts.checkpoint} does not exist")
    folder = sweep_folder(SPEC.job, opts)
    state = plan(SPEC, opts, folder)
    dataset = load_dataset(state.experiment.data)
    data = stage_data(dataset, opts.checkpoint, opts.retrain_top > 0)
    with sweep.ray_session(opts):
        state = sweep.run_sweep(SPEC, opts, state, folder, data)
        if state.finished and opts.retrain_top:
            second = folder.with_name(f"{folder.name}-retrain")
            settings = [{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("pld.")}
                        for values in state.best["top"][:opts.retrain_top]]
            retrain = SweepState.load(second) if opts.resume and \
                (second / STATE_FILE).is_file() else SweepState(
                    RETRAIN_SPEC.job, second.name, "", "", state.tracking_uri,
                    to_dict(state.winner), {"pld": {"grid_search": settings}}, 1)
            state = sweep.run_sweep(RETRAIN_SPEC, opts, retrain, second,
                                    lambda s: {"dataset": dataset, **data(s)},
                                    tags={"vaplan.sweep_of": state.parent_run_id})
    return 0 if state.finished else EXIT_INTERRUPTED


if __name__ == "__main__":  # run the importable module so Ray pickles its functions by name
    from ray_jobs.tune_pld import main as module_main

    sys.exit(module_main())
