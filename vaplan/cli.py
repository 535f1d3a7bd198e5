"""The `vaplan` command. Heavy parts (torch, MLflow, Ray, CLIP/CLAP) are imported inside
commands, from `pipelines` (MLflow) and `ray_jobs` (Ray); this module imports neither.

    vaplan run --preset sim-small               the tracked pipeline (`make demo`)
    vaplan sweep plg|train|pld|all [ARGS...]    Ray Tune sweeps (`vaplan sweep plg --help`)
    vaplan ablation --preset sim-small          Table 5 on LLP-sim
    vaplan teach --videos DIR --split-csv FILE --out CACHE
    vaplan build-features --feats DIR --split val --out STORE
    vaplan pull --model vaplan-han --alias champion --dest DIR
    vaplan evaluate --model models:/vaplan-han@champion --split test
    vaplan report models:/vaplan-han@champion --out champion.html
    vaplan import-checkpoint MMIL_Net.pt --out han.pt

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
    """The checked config (a bad preset or override raises ConfigError -> one line, exit 2)."""
    from vaplan.config import apply_overrides, get_preset

    return apply_overrides(get_preset(preset), overrides or [])


SWEEPS = {"plg": "ray_jobs.tune_plg", "train": "ray_jobs.tune_train", "pld": "ray_jobs.tune_pld",
          "all": "ray_jobs.pipeline"}  # what `ray job submit -- python -m <module>` runs


@app.command()
def run(preset: str = typer.Option("sim-small", help="config preset (vaplan.config.PRESETS)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", metavar="SECTION.OPTION=VALUE",
                                                 help="config override (repeatable), e.g. "
                                                      "train.lr=1e-3"),
        tracking_uri: Optional[str] = typer.Option(None, help="MLflow store (default: "
                                                   "$MLFLOW_TRACKING_URI, else "
                                                   "./mlruns/mlflow.db)"),
        experiment: str = typer.Option("vaplan", help="MLflow experiment of the runs"),
        model_name: str = typer.Option("vaplan-han", help="registered model (a new version "
                                       "per run)"),
        promote_metric: str = typer.Option("val/seg_type", help="val/<score> the promotion "
                                           "gate compares"),
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
    """
    from pipelines.config import pipeline_config_from_preset  # checked before MLflow loads

    cfg = pipeline_config_from_preset(
        preset, set_ or [], tracking_uri=tracking_uri, experiment_name=experiment,
        model_name=model_name, promote_metric=promote_metric, run_name=run_name, reuse=reuse,
        progress=not quiet)
    from pipelines.commands import run_and_check

    run_and_check(cfg)


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
             set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. train.epochs=5"),
             rows: str = typer.Option("1,2,3,4,5", help="Table 5 rows, any of 1..5, e.g. 1,2"),
             seeds: Optional[str] = typer.Option(None, help="train.seed values, e.g. 0,1,2 "
                                                 "(default: the config's train.seed)"),
             output: Optional[Path] = typer.Option(None, help="also write the table here "
                                                   "(Markdown; the CSV goes next to it), "
                                                   "after every unit"),
             experiment: str = typer.Option("vaplan-ablations", help="MLflow experiment"),
             tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI"),
             resume: bool = typer.Option(True, help="resume the parent run of the same arguments "
                                         "(--no-resume starts a new one)"),
             progress: bool = typer.Option(True, help="per-epoch training progress")):
    """Table 5 (baseline, PLG, + L'_S, + L_S, + PLD): each row x seed an MLflow run; resumable.

    Runs go to the experiment `vaplan-ablations`; the same command again resumes (finished
    rows x seeds are skipped).

    Examples:

        vaplan ablation --preset sim-tiny --rows 1,2 --seeds 0,1

        vaplan ablation --preset sim-small --output results/table5.md
    """
    from vaplan.ablation import parse_rows, parse_seeds
    from vaplan.errors import ConfigError

    cfg = _experiment(preset, set_)
    row_ids = parse_rows(rows)
    if seeds is not None and any(item.split("=")[0].strip() == "train.seed"
                                 for item in set_ or []):
        raise ConfigError("--seeds and --set train.seed both given; give the seeds with --seeds")
    seed_list = parse_seeds(seeds) if seeds is not None else (cfg.train.seed,)
    from pipelines.ablation import run_ablation  # MLflow only once the command runs

    result = run_ablation(cfg, row_ids, seed_list, preset=preset, tracking_uri=tracking_uri,
                          experiment=experiment, output=output, resume=resume,
                          progress=progress, log=typer.echo)
    typer.echo(result.markdown)
    from pipelines.tracking import ui_links

    typer.echo(ui_links(result.tracking_uri, result.experiment_id, result.parent_run_id))


def _write_text(path: Path, text: str) -> None:
    from vaplan.io import atomic_write

    atomic_write(path, text)


@app.command("build-features")
def build_features(feats: Path = typer.Option(..., help="folder with vggish/, res152/, r2plus1d_18/"),
                   split: str = typer.Option(..., help="train, val or test"),
                   out: Path = typer.Option(..., help="output store folder"),
                   dtype: str = typer.Option("float16", help="float16 or float32")):
    """Validate the official LLP feature files of a split and write one compact store.

    Example (the official AVVP feature folders vggish/, res152/, r2plus1d_18/ under DIR):

        vaplan build-features --feats DIR --split val --out stores/val
    """
    from vaplan.data.features import build_feature_store
    from vaplan.data.llp import load_split

    path = build_feature_store(feats, load_split(split), out, dtype=dtype)
    typer.echo(f"wrote {path}")


@app.command()
def pull(model: str = typer.Option("vaplan-han", help="registered model name"),
         alias: Optional[str] = typer.Option("champion", help="alias to pull"),
         version: Optional[int] = typer.Option(None, help="version to pull (instead of alias)"),
         dest: Path = typer.Option(..., help="folder for checkpoint, labels and config"),
         tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI")):
    """Pull a registered model: checkpoint, denoised labels (Parquet) and config.

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
             tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI")):
    """Load a registered model and print the ten AVVP numbers (official protocol).

    Examples:

        vaplan evaluate --model models:/vaplan-han@champion --split test

        vaplan evaluate --model models:/vaplan-han/1 --split val
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"--split must be train, val or test, got {split!r}")
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
           tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI")):
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
