"""The `vaplan` command. Heavy parts (torch, MLflow, Ray, CLIP/CLAP) are imported inside
commands, from `pipelines` (MLflow) and `ray_jobs` (Ray); this module imports neither.

    vaplan run --preset sim-small               the tracked pipeline (`make demo`)
    vaplan sweep plg|train|pld|all [ARGS...]    Ray Tune sweeps (`vaplan sweep plg --help`)
    vaplan ablation --preset sim-small          Table 5 (--table 6|8, --ray) on LLP-sim
    vaplan teach --videos DIR --split-csv FILE --out CACHE
    vaplan build-features --feats DIR --split val --out STORE   (--dataset ave: docs/ave.md)
    vaplan doctor --preset llp --set data.feature_dir=DIR --set data.teacher_cache=DIR
    vaplan pull --model vaplan-han --alias champion --dest DIR
    vaplan evaluate --model models:/vaplan-han@champion --split test
    vaplan report models:/vaplan-han@champion --out champion.html
    vaplan import-checkpoint MMIL_Net.pt --out han.pt
    vaplan register-checkpoint han.pt --preset llp --set data.feature_dir=DIR

User errors (`vaplan.errors.UserError`, bad options) end as one line `error: <message>` on
stderr with exit status 2, in every CLI of the project: `main` here for `vaplan`,
`exits_on_user_error` and `ArgumentParser` for `python -m pipelines` and `python -m ray_jobs.*`.
Any other exception is a bug or an environment failure and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from vaplan.errors import UserError

try:  # typer >= 0.2x vendors click; its exceptions live there
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as click_errors

EXIT_USER_ERROR = 2

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="VAPLAN: segment-wise pseudo labels for audio-visual video parsing.")


def _experiment(preset: str, overrides: list[str] | None):
    """The checked config (a bad preset or override raises ConfigError -> one line, exit 2),
    with the chosen backbone's recipe where no override set the option (`configure`)."""
    from vaplan.config import configure, get_preset

    return configure(get_preset(preset), overrides or [])


def set_option():
    """The one `--set SECTION.OPTION=VALUE` option (repeatable) of the config commands."""
    return typer.Option(None, "--set", metavar="SECTION.OPTION=VALUE",
                        help="config override (repeatable), e.g. train.lr=1e-3")


def store_option(what: str = "MLflow store"):
    """The one `--tracking-uri` option; its default is the pipeline's store."""
    return typer.Option(None, "--tracking-uri", help=f"{what} (default: $MLFLOW_TRACKING_URI, "
                        "else ./mlruns/mlflow.db)")


SWEEPS = {"plg": "ray_jobs.tune_plg", "train": "ray_jobs.tune_train", "pld": "ray_jobs.tune_pld",
          "all": "ray_jobs.pipeline"}  # what `ray job submit -- python -m <module>` runs


@app.command()
def run(preset: str = typer.Option("sim-small", help="config preset (vaplan.config.PRESETS)"),
        set_: Optional[List[str]] = set_option(),
        tracking_uri: Optional[str] = store_option(),
        experiment: str = typer.Option("vaplan", help="MLflow experiment of the runs"),
        model_name: Optional[str] = typer.Option(None, help="registered model (a new "
                                                 "version per run; default: one per backbone, "
                                                 "vaplan-han, vaplan-mgn, vaplan-mm-pyramid)"),
        promote_metric: Optional[str] = typer.Option(None, help="val/<score> the promotion "
                                                     "gate compares (default val/seg_type; "
                                                     "AVE presets: val/accuracy)"),
        run_name: str = typer.Option("", help="parent run name (default: <preset> "
                                     "<overrides> <4 characters of the run id>)"),
        reuse: bool = typer.Option(True, "--reuse/--no-reuse", help="reuse steps that "
                                   "finished with the same config and inputs"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress output")):
    """The tracked pipeline: labels, train, denoise, retrain, evaluate, register + promote.

    Each step is a child run of one parent run in MLflow; the retrained model becomes a new
    version of the registered model and the champion only if it beats the champion beyond
    the noise. Then the champion is pulled back, re-evaluated on test next to the logged
    numbers, and the MLflow UI links are printed. `python -m pipelines` and `make demo` run
    this command.

    Examples:

        vaplan run --preset sim-small

        vaplan run --preset sim-tiny --set train.epochs=1 --set train.lr=1e-3

        vaplan run --preset sim-small --tracking-uri http://127.0.0.1:5000

        vaplan run --preset ave-sim --set data.sim.num_train=300 --set train.epochs=1
    """
    from vaplan.ave.config import is_ave_preset

    if is_ave_preset(preset):  # AVE (docs/ave.md): its own steps and registered models
        return _run_ave(preset, set_ or [], tracking_uri, experiment, model_name,
                        promote_metric, run_name, reuse, quiet)
    from pipelines.config import pipeline_config_from_preset  # checked before MLflow loads

    cfg = pipeline_config_from_preset(
        preset, set_ or [], tracking_uri=tracking_uri, experiment_name=experiment,
        model_name=model_name, run_name=run_name, reuse=reuse, progress=not quiet,
        **({"promote_metric": promote_metric} if promote_metric else {}))
    from pipelines.pipeline import run_and_check

    run_and_check(cfg)


def _run_ave(preset, overrides, tracking_uri, experiment, model_name, promote_metric, run_name,
             reuse, quiet) -> None:
    """`vaplan run --preset ave-sim ...`: the tracked AVE pipeline (pipelines/ave.py)."""
    from vaplan.ave.config import PROMOTE_METRIC, ave_experiment
    from vaplan.errors import ConfigError

    if promote_metric not in (None, PROMOTE_METRIC):
        raise ConfigError(f"--promote-metric {promote_metric}: an AVE model is gated on "
                          f"{PROMOTE_METRIC} (per-video val segment accuracy)")
    exp = ave_experiment(preset, overrides)
    from pipelines.ave import AveRun, run_and_check

    run_and_check(AveRun(exp, preset, tuple(overrides), experiment, tracking_uri, model_name,
                         run_name, reuse=reuse, progress=not quiet))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def sweep(ctx: typer.Context,
          kind: Optional[str] = typer.Argument(None, metavar="plg|train|pld|all",
                                               help="which sweep"),
          args: Optional[List[str]] = typer.Argument(None, metavar="[ARGS]...",
                                                     help="the sweep's own options "
                                                          "(vaplan sweep plg --help)")):
    """Ray Tune sweeps: PLG thresholds (plg), training (train), PLD K/alpha (pld), or all.

    The same code that `ray job submit -- python -m ray_jobs.<tune_plg|tune_train|tune_pld|
    pipeline>` runs, started or joining a local Ray here. Each sweep's options: `vaplan sweep
    plg --help`.

    Examples:

        vaplan sweep plg --preset sim-small

        vaplan sweep train --preset sim-tiny --help

        vaplan sweep all --preset sim-small
    """
    if kind in (None, "--help", "-h"):
        typer.echo(ctx.get_help())
        return 0 if kind else EXIT_USER_ERROR
    if kind not in SWEEPS:
        raise UserError(f"unknown sweep {kind!r}; expected one of {', '.join(SWEEPS)} "
                        f"(see vaplan sweep --help)")
    import importlib

    return importlib.import_module(SWEEPS[kind]).main(list(args or []))


@app.command()
def ablation(preset: str = typer.Option("sim-small", help="config preset (vaplan.config.PRESETS)"),
             set_: Optional[List[str]] = set_option(),
             table: str = typer.Option("5", help="5 (baseline ... + PLD), 6 (richness-aware "
                                       "loss: 2, CR, SR, 4), 8 (MGN, MM-Pyramid: base, "
                                       "+MA, +PLG, +PLD) or 9 (AVE with --preset ave-sim: "
                                       "avel, avel+plg, psp, psp+plg, cmbs, cmbs+plg)"),
             rows: Optional[str] = typer.Option(None, help="rows of the table, e.g. 1,2 "
                                                "(default: all; Table 5: 1..5, Table 6: "
                                                "2,CR,SR,4; Table 8: mgn, mgn+ma, mgn+plg, "
                                                "mgn+pld, the same for mm_pyramid; a pattern "
                                                "such as 'mgn*' picks several)"),
             seeds: Optional[str] = typer.Option(None, help="train.seed values, e.g. 0,1,2 "
                                                 "(default: the config's train.seed)"),
             output: Optional[Path] = typer.Option(None, help="also write the table here "
                                                   "(Markdown; the CSV goes next to it), "
                                                   "after every unit"),
             experiment: str = typer.Option("vaplan-ablations", help="MLflow experiment"),
             tracking_uri: Optional[str] = store_option(),
             resume: bool = typer.Option(True, help="resume the parent run of the same arguments "
                                         "(--no-resume starts a new one)"),
             progress: bool = typer.Option(True, help="per-epoch training progress"),
             ray: bool = typer.Option(False, "--ray", help="rows x seeds as Ray Tune trials "
                                      "(runs still written by this process)"),
             address: Optional[str] = typer.Option(None, help="--ray: Ray address (default: "
                                                   "RAY_ADDRESS or a local head, else a new "
                                                   "one; 'local': a new one)"),
             num_cpus: Optional[int] = typer.Option(None, help="--ray: CPUs of a new local Ray"),
             cpus_per_trial: float = typer.Option(1.0, help="--ray: CPUs per trial (also its "
                                                  "torch threads)"),
             gpus_per_trial: str = typer.Option("auto", help="--ray: GPUs per trial: auto "
                                                "(the cluster's GPUs shared by the trials of "
                                                "a wave; 0 without GPUs) or a number, e.g. "
                                                "0.5 (> 0 trains on cuda)"),
             storage_path: Optional[Path] = typer.Option(None, help="--ray: Tune storage "
                                                         "(default: a temporary folder; shared "
                                                         "storage on a multi-node cluster)"),
             export: Optional[Path] = typer.Option(None, help="write every unit run of the "
                                                   "experiment (config + metrics) as CSV"),
             train: bool = typer.Option(True, help="--no-train: only --export, from an "
                                        "existing store")):
    """Table 5 (baseline, PLG, + L'_S, + L_S, + PLD), Table 6 (CR only, SR only), Table 8
    (VAPLAN's labels on MGN and MM-Pyramid, docs/backbones.md) or Table 9 (AVE: AVEL, PSP,
    CMBS without and with PLG, docs/ave.md): each row x seed an MLflow run; resumable.

    Runs go to the experiment `vaplan-ablations`; the same command again resumes (finished
    rows x seeds are skipped), also across --ray and the default one-after-the-other.

    Examples:

        vaplan ablation --preset sim-tiny --rows 1,2 --seeds 0,1

        vaplan ablation --preset sim-small --table 6 --seeds 0,1,2 --ray --cpus-per-trial 1

        vaplan ablation --preset sim-full --table 8 --rows 'mgn*' --seeds 0,1

        vaplan ablation --table 9 --preset ave-sim --seeds 0,1

        vaplan ablation --preset sim-small --output results/table5.md --export runs.csv

        vaplan ablation --no-train --export runs.csv --tracking-uri sqlite:///abl/mlflow.db
    """
    from vaplan.ablation import check_base, check_task, get_table, parse_rows, parse_seeds
    from vaplan.errors import ConfigError

    if not train:
        if export is None:
            raise ConfigError("--no-train does nothing without --export FILE")
        from pipelines.ablation import export_runs

        count = export_runs(export, tracking_uri=tracking_uri, experiment=experiment)
        typer.echo(f"[ablation] {count} unit runs of {experiment!r} written to {export}")
        return
    from vaplan.ave.config import ave_experiment, is_ave_preset

    cfg = ave_experiment(preset, set_ or []) if is_ave_preset(preset) else \
        check_base(_experiment(preset, set_))  # Table 9 trains AVE experiments (docs/ave.md)
    spec = get_table(table)
    check_task(spec, cfg)
    if ray and spec.task == "ave":
        raise ConfigError("--ray: Table 9's AVE units run one after the other (no --ray yet)")
    row_ids = parse_rows(rows, spec) if rows is not None else spec.row_ids
    if seeds is not None and any(item.split("=")[0].strip() == "train.seed"
                                 for item in set_ or []):
        raise ConfigError("--seeds and --set train.seed both given; give the seeds with --seeds")
    seed_list = parse_seeds(seeds) if seeds is not None else (cfg.train.seed,)
    options = dict(table=spec.id, preset=preset, tracking_uri=tracking_uri,
                   experiment=experiment, output=output, resume=resume, progress=progress,
                   log=typer.echo)
    if ray:  # Ray and MLflow only once the command runs
        from ray_jobs.ablation import RayOptions, run_ablation_ray

        result = run_ablation_ray(cfg, row_ids, seed_list, RayOptions(
            address, num_cpus, cpus_per_trial, gpus_per_trial, storage_path), **options)
    else:
        from pipelines.ablation import run_ablation

        result = run_ablation(cfg, row_ids, seed_list, **options)
    typer.echo(result.markdown)
    if export is not None:
        from pipelines.ablation import export_runs

        count = export_runs(export, tracking_uri=result.tracking_uri, experiment=experiment)
        typer.echo(f"[ablation] {count} unit runs of {experiment!r} written to {export}")
    from vaplan.store_uri import ui_links

    typer.echo(ui_links(result.tracking_uri, result.experiment_id, result.parent_run_id))


def _write_text(path: Path, text: str) -> None:
    from vaplan.io import atomic_write

    atomic_write(path, text)


@app.command("build-features")
def build_features(feats: Optional[Path] = typer.Option(None, help="llp: folder with vggish/, "
                                                        "res152/, r2plus1d_18/"),
                   split: Optional[str] = typer.Option(None, help="llp: train, val or test"),
                   out: Path = typer.Option(..., help="output store folder"),
                   dtype: str = typer.Option("float16", help="float16 or float32"),
                   max_videos: int = typer.Option(0, min=0, help="llp: only the first N videos of "
                                                  "the split file (0 = all), as "
                                                  "data.max_train_videos/max_eval_videos; ave: "
                                                  "only the first N rows of the .h5 files"),
                   dataset: str = typer.Option("llp", help="llp or ave (docs/ave.md)"),
                   audio: Optional[Path] = typer.Option(None, help="ave: audio_feature.h5"),
                   visual: Optional[Path] = typer.Option(None, help="ave: visual_feature.h5"),
                   noisy_audio: Optional[Path] = typer.Option(None, help="ave: "
                                                              "audio_feature_noisy.h5"),
                   noisy_visual: Optional[Path] = typer.Option(None, help="ave: "
                                                               "visual_feature_noisy.h5")):
    """Validate official feature files and write one compact store (LLP: one split; AVE: all).

    Examples (LLP: the official AVVP feature folders vggish/, res152/, r2plus1d_18/ under DIR;
    AVE: the .h5 files of AVE-ECCV18, the background videos optional):

        vaplan build-features --feats DIR --split val --out stores/val

        vaplan build-features --dataset ave --audio audio_feature.h5 --visual visual_feature.h5 --noisy-audio audio_feature_noisy.h5 --noisy-visual visual_feature_noisy.h5 --out stores/ave
    """
    import numpy as np

    given = {"--audio": audio, "--visual": visual, "--noisy-audio": noisy_audio,
             "--noisy-visual": noisy_visual, "--feats": feats, "--split": split}
    if dataset == "ave":
        from vaplan.data.ave import build_ave_feature_store

        wrong = [name for name in ("--feats", "--split") if given[name] is not None]
        if wrong or audio is None or visual is None:
            raise UserError(f"--dataset ave needs --audio and --visual (and takes no "
                            f"{'/'.join(wrong) or '--feats/--split'})")
        path = build_ave_feature_store(audio, visual, out, noisy_audio, noisy_visual, dtype,
                                       max_videos)
        typer.echo(f"wrote {path}")
        return
    if dataset != "llp":
        raise UserError(f"--dataset must be llp or ave, got {dataset!r}")
    wrong = [name for name in ("--audio", "--visual", "--noisy-audio", "--noisy-visual")
             if given[name] is not None]
    if wrong or feats is None or split is None:
        raise UserError(f"--dataset llp needs --feats and --split (and takes no "
                        f"{'/'.join(wrong) or 'AVE .h5 options'})")
    from vaplan.data.features import build_feature_store
    from vaplan.data.llp import load_split

    data = load_split(split)
    if 0 < max_videos < len(data):
        data = data.subset(np.arange(max_videos))
    path = build_feature_store(feats, data, out, dtype=dtype)
    typer.echo(f"wrote {path}")


@app.command()
def doctor(preset: str = typer.Option("llp", help="config preset (vaplan.config.PRESETS)"),
           set_: Optional[List[str]] = set_option(),
           tracking_uri: Optional[str] = store_option("MLflow store the run will use"),
           sweep: bool = typer.Option(False, "--sweep", help="also check Ray (RAY_ADDRESS)")):
    """Preflight: check every input a run needs, one line per item, before any long step.

    Feature stores and their video coverage per split, the teacher cache (coverage per split
    and modality, digests, random-weight flag), the tracking store, and Ray with --sweep.
    Exit 0 when every item is OK (or WARN), 2 otherwise. Nothing is created or trained.

    Examples:

        vaplan doctor --preset llp --set data.feature_dir=DIR --set data.teacher_cache=DIR

        vaplan doctor --preset sim-small --sweep
    """
    from vaplan.doctor import check_experiment

    checks = check_experiment(_experiment(preset, set_))
    from pipelines.doctor import check_services  # MLflow only here, after the data checks

    checks += check_services(tracking_uri, sweep=sweep)
    for check in checks:
        typer.echo(check.line())
    bad = sum(not check.ok for check in checks)
    typer.echo(f"{len(checks)} checks, {bad} failed" if bad else f"{len(checks)} checks: ready")
    if bad:
        raise typer.Exit(EXIT_USER_ERROR)


@app.command()
def pull(model: str = typer.Option("vaplan-han", help="registered model name"),
         alias: Optional[str] = typer.Option("champion", help="alias to pull"),
         version: Optional[int] = typer.Option(None, help="version to pull (instead of alias)"),
         dest: Path = typer.Option(..., help="folder for checkpoint, labels and config"),
         tracking_uri: Optional[str] = store_option()):
    """Pull a registered model: checkpoint, the labels it was trained on (Parquet) and config.

    Every file is checked against the sha256 recorded at registration first.

    Examples:

        vaplan pull --model vaplan-han --alias champion --dest out/champion

        vaplan pull --model vaplan-han --version 1 --dest out/v1
    """
    from pipelines.commands import pull as pull_model

    folder = pull_model(model, str(dest), alias=None if version else alias, version=version,
                        tracking_uri=tracking_uri)
    typer.echo(f"pulled {model} into {folder}")


@app.command()
def evaluate(model: str = typer.Option("models:/vaplan-han@champion", help="model URI"),
             split: str = typer.Option("test", help="val or test"),
             tracking_uri: Optional[str] = store_option()):
    """Load a registered model and print the ten AVVP numbers (official protocol).

    Examples:

        vaplan evaluate --model models:/vaplan-han@champion --split test

        vaplan evaluate --model models:/vaplan-han/1 --split val
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"--split must be train, val or test, got {split!r}")
    from pipelines.ave import evaluate_registered as evaluate_ave, is_ave_model

    if is_ave_model(model, tracking_uri):  # vaplan-avel/psp/cmbs: segment accuracy (docs/ave.md)
        accuracy = evaluate_ave(model, split=split, tracking_uri=tracking_uri)["accuracy"]
        typer.echo(f"{split}/accuracy   {accuracy:6.2f}")
        return
    from pipelines.commands import evaluate_registered
    from vaplan.metrics import SCORE_KEYS

    scores = evaluate_registered(model, split=split, tracking_uri=tracking_uri)
    for key in SCORE_KEYS:
        typer.echo(f"{split}/{key:<10} {scores[key]:6.2f}")


@app.command()
def report(model: str = typer.Argument("models:/vaplan-han@champion",
                                       help="models:/NAME@ALIAS or models:/NAME/VERSION"),
           out: Optional[Path] = typer.Option(None, help="HTML file to write (default "
                                              "./vaplan-report-NAME-vVERSION.html)"),
           tracking_uri: Optional[str] = store_option()):
    """Write a registered version's HTML report (label quality, the ten numbers, Fig. 3a/3b,
    the promotion gate, the config diff to the champion) and print its path.

    Example: vaplan report models:/vaplan-han@champion --out champion.html
    """
    from pipelines.report import open_report

    path, how = open_report(model, out, tracking_uri)
    print(f"{model}: report {how}", file=sys.stderr)
    typer.echo(str(path))


@app.command("import-checkpoint")
def import_checkpoint(source: Path = typer.Argument(..., help="state_dict saved by the official "
                                                    "AVVP-ECCV20 main_avvp.py (MMIL_Net.pt)"),
                      out: Path = typer.Option(..., help="vaplan checkpoint to write")):
    """Convert an official HAN state_dict into a vaplan checkpoint (docs/fidelity.md).

    Example:

        vaplan import-checkpoint MMIL_Net.pt --out han.pt
    """
    from vaplan.official import HAN_PARAMETERS, OFFICIAL_PARAMETERS, RENAMED, UNUSED
    from vaplan.official import import_official_checkpoint

    path, extra = import_official_checkpoint(source, out)
    typer.echo(f"wrote {path}: HAN with {HAN_PARAMETERS:,} of the official {OFFICIAL_PARAMETERS:,} "
               f"parameters ({len(RENAMED)} keys renamed, {len(UNUSED)} unused keys dropped); "
               f"source sha256 {extra['source_sha256']}")


@app.command("register-checkpoint")
def register_checkpoint(checkpoint: Path = typer.Argument(..., help="a vaplan checkpoint, e.g. "
                                                          "from vaplan import-checkpoint"),
                        model_name: str = typer.Option("vaplan-han-official", help="registered "
                                                       "model that receives the version"),
                        preset: str = typer.Option("sim-small", help="the dataset it is scored "
                                                   "on (vaplan.config.PRESETS)"),
                        set_: Optional[List[str]] = set_option(),
                        tracking_uri: Optional[str] = store_option()):
    """Score a trained HAN checkpoint on val and test and register it, gated against the
    model's champion like a pipeline's version (docs/pipelines.md).

    `han.pt` may come from `vaplan import-checkpoint MMIL_Net.pt --out han.pt`.

    Examples:

        vaplan register-checkpoint han.pt --preset sim-small

        vaplan register-checkpoint han.pt --preset llp --set data.feature_dir=/data/llp/features
    """
    from vaplan.config import apply_overrides, get_preset, validate_experiment

    experiment = apply_overrides(get_preset(preset), list(set_ or []))
    validate_experiment(experiment)
    from pipelines.imported import register_checkpoint as register

    record = register(checkpoint, experiment, model_name=model_name, preset=preset,
                      tracking_uri=tracking_uri)
    decision = record["decision"]
    typer.echo(f"registered {record['model_uri']}: val/seg_type "
               f"{record['scores']['val']['seg_type']:.2f}, test/seg_type "
               f"{record['scores']['test']['seg_type']:.2f}; "
               f"{'champion' if decision['promoted'] else 'not promoted'} ({decision['reason']})")


def _register_teach() -> None:
    try:
        from vaplan.teachers.command import teach
    except ImportError:  # the teachers package is optional at import time
        return
    app.command("teach")(teach)


_register_teach()


# ---------------------------------------------------------------- user errors, every CLI

def report_user_error(err: BaseException) -> int:
    """Print `error: <message>` as one line on stderr; returns the exit status (2)."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"error: {message or type(err).__name__}", file=sys.stderr, flush=True)
    return EXIT_USER_ERROR


def exits_on_user_error(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI's `main(argv)`: a UserError becomes one line on stderr and exit status 2."""
    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as err:
            return report_user_error(err)
    return wrapped


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors (one line, exit 2) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


@exits_on_user_error
def run_app(argv: list[str] | None = None) -> int:
    """`vaplan` with the project's error contract; returns the exit status."""
    try:
        result = app(args=argv, prog_name="vaplan", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as err:
        err.show()
        return EXIT_USER_ERROR
    except click_errors.UsageError as err:  # typer.BadParameter, unknown or missing options
        where = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
        return report_user_error(UserError(err.format_message() + where))
    except click_errors.ClickException as err:
        report_user_error(UserError(err.format_message()))
        return err.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_app(argv))


if __name__ == "__main__":
    main()
