"""``train`` and ``evaluate``: the chain's optional PyTorch end (``pip install '.[train]'``)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from tqdm import tqdm

from ben_builder.cli.common import friendly

log = logging.getLogger(__name__)


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            "training needs PyTorch: pip install -e '.[train]' (or make train)"
        ) from exc


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@friendly
def train(config: Path) -> None:
    """Train a model on an encoded archive (resumes from last.pt), then evaluate it on test."""
    _need_torch()
    from ben_builder.train.config import load_train_config
    from ben_builder.train.engine import BEST, evaluate
    from ben_builder.train.engine import train as run_train

    cfg = load_train_config(config)
    with tqdm(unit="step", desc=cfg.name, disable=None) as bar:

        def step(_: int, loss: float) -> None:
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")

        state = run_train(cfg, on_step=step)
    click.echo(f"best validation macro AP {state['best_ap']:.4f} after {state['epoch']} epochs")
    results = evaluate(cfg.output / BEST)
    m, b = results["model"], results["baseline_train_frequencies"]
    click.echo(
        f"test: macro AP {m['average_precision_macro']:.4f} (baseline "
        f"{b['average_precision_macro']:.4f}), micro F1 {m['f1_micro']:.4f} "
        f"-> {cfg.output / 'results.md'}"
    )


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--split", type=click.Choice(["test", "validation", "train"]), default="test", show_default=True
)
@click.option(
    "--encoded",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Encoded archive to evaluate on (default: the one the model was trained on).",
)
@click.option(
    "--bands",
    help="The model's input bands in order, comma-separated (needed for a model "
    "trained elsewhere), e.g. B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12.",
)
@click.option(
    "--class-order",
    type=click.Choice(["official", "alphabetical"]),
    help="Order of a foreign model's outputs (configilm-trained models: alphabetical).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the tables (default: next to the checkpoint).",
)
@friendly
def evaluate(
    checkpoint: Path,
    split: str,
    encoded: Path | None,
    bands: str | None,
    class_order: str | None,
    out: Path | None,
) -> None:
    """Evaluate a checkpoint: results table, per-class table (and training curve) next to it.

    CHECKPOINT is a best.pt/last.pt from `ben-builder train`, or a model trained elsewhere: a
    torchvision ResNet-50 state dict (or a Lightning checkpoint of one) with --encoded, --bands
    and, if its outputs are in alphabetical order, --class-order alphabetical.
    """
    _need_torch()
    from ben_builder.train.engine import evaluate as run_eval

    band_list = tuple(b.strip() for b in bands.split(",")) if bands else None

    results = run_eval(
        checkpoint, split, out=out, encoded=encoded, bands=band_list, class_order=class_order
    )
    for k, v in results["model"].items():
        click.echo(f"{k:28s} {v:.4f}  (baseline {results['baseline_train_frequencies'][k]:.4f})")


COMMANDS = [train, evaluate]
