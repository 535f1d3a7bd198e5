"""The `vaplan` command. Heavy parts (torch, MLflow, CLIP/CLAP) are imported inside commands.

    vaplan ablation --preset sim-small          Table 5 on LLP-sim
    vaplan teach --videos DIR --split-csv FILE --out CACHE
    vaplan build-features --feats DIR --split val --out STORE
    vaplan pull --model vaplan-han --alias champion --dest DIR
    vaplan evaluate --model models:/vaplan-han@champion --split test
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="VAPLAN: segment-wise pseudo labels for audio-visual video parsing.")


def _experiment(preset: str, overrides: list[str] | None):
    from vaplan.config import apply_overrides, get_preset

    try:
        return apply_overrides(get_preset(preset), overrides or [])
    except (KeyError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None


@app.command()
def ablation(preset: str = typer.Option("sim-small", help="config preset (vaplan.config.PRESETS)"),
             set_: Optional[List[str]] = typer.Option(None, "--set", help="override, e.g. train.epochs=5"),
             rows: str = typer.Option("1,2,3,4,5", help="Table 5 rows to run"),
             output: Optional[Path] = typer.Option(None, help="also write the table (Markdown) here")):
    """Run the Table 5 ablation (baseline, PLG, + L'_S, + L_S, + PLD) and print the table."""
    from vaplan.ablation import format_ablation, run_ablation
    from vaplan.data.dataset import load_dataset

    cfg = _experiment(preset, set_)
    typer.echo(f"[ablation] preset {preset}: building dataset ({cfg.data.source})")
    dataset = load_dataset(cfg.data, progress=True)
    typer.echo(f"[ablation] {dataset.description}")
    result = run_ablation(cfg, dataset, rows=tuple(r.strip() for r in rows.split(",")))
    table = format_ablation(result)
    typer.echo(table)
    if output is not None:
        _write_text(output, table + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@app.command("build-features")
def build_features(feats: Path = typer.Option(..., help="folder with vggish/, res152/, r2plus1d_18/"),
                   split: str = typer.Option(..., help="train, val or test"),
                   out: Path = typer.Option(..., help="output store folder"),
                   dtype: str = typer.Option("float16", help="float16 or float32")):
    """Validate the official LLP feature files of a split and write one compact store."""
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
    """Pull a registered model: checkpoint, denoised labels (Parquet) and config."""
    from pipelines.commands import pull as pull_model

    folder = pull_model(model, str(dest), alias=None if version else alias, version=version,
                        tracking_uri=tracking_uri)
    typer.echo(f"pulled {model} into {folder}")


@app.command()
def evaluate(model: str = typer.Option("models:/vaplan-han@champion", help="model URI"),
             split: str = typer.Option("test", help="val or test"),
             tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI")):
    """Load a registered model and print the ten AVVP numbers (official protocol)."""
    from pipelines.commands import evaluate_registered
    from vaplan.metrics import SCORE_KEYS

    scores = evaluate_registered(model, split=split, tracking_uri=tracking_uri)
    for key in SCORE_KEYS:
        typer.echo(f"{split}/{key:<10} {scores[key]:6.2f}")


def _register_teach() -> None:
    try:
        from vaplan.teachers.command import teach
    except ImportError:  # the teachers package is optional at import time
        return
    app.command("teach")(teach)


_register_teach()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
