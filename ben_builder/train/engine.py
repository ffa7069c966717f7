"""Training and evaluation loops.

AdamW, BCE with logits, bf16 autocast on CUDA, checkpoints, early stopping on validation macro
average precision, fixed seeds, resumable runs. A checkpoint records the input band order
(``bands``) and the output class order (``classes``); :func:`evaluate` also takes a model
trained elsewhere (a torchvision ResNet-50 state dict, or a Lightning checkpoint of one) given
its band order and class order.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ben_builder.errors import ModelError
from ben_builder.train.config import TrainConfig
from ben_builder.train.data import (
    BandStats,
    DeviceTransform,
    EncodedPatches,
    band_stats,
    class_names,
)
from ben_builder.train.metrics import all_metrics, per_class_table
from ben_builder.train.models import MultiBranchCNN, resnet50

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: TrainConfig, channels: dict[int, int]) -> nn.Module:
    """The configured model for the given bands per resolution."""
    classes = len(class_names(cfg.classes))
    if cfg.model == "multibranch":
        return MultiBranchCNN(channels, classes)
    return resnet50(sum(channels.values()), classes)


def _forward(
    model: nn.Module, cfg: TrainConfig, tf: DeviceTransform, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    if cfg.model == "multibranch":
        return model(tf.native(batch))
    return model(tf.stacked(batch))


def _loader(ds: EncodedPatches, cfg: TrainConfig, shuffle: bool, seed: int) -> DataLoader[Any]:
    g = torch.Generator()
    g.manual_seed(seed)
    # spawned workers: LMDB refuses an environment inherited through fork
    ctx = "spawn" if cfg.num_workers > 0 else None
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0,
        drop_last=False,
        multiprocessing_context=ctx,
    )


def predict(
    model: nn.Module,
    cfg: TrainConfig,
    tf: DeviceTransform,
    loader: DataLoader[Any],
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores and targets over a loader."""
    model.eval()
    scores, targets = [], []
    with torch.no_grad(), _autocast(device):
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            scores.append(torch.sigmoid(_forward(model, cfg, tf, batch).float()).cpu().numpy())
            targets.append(batch["y"].cpu().numpy())
    return np.concatenate(scores), np.concatenate(targets)


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train (or resume) per ``cfg``; returns the history and the best validation macro AP."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    train_ds = EncodedPatches(cfg.encoded, "train", cfg.classes, cfg.bands, cfg.class_order)
    val_ds = EncodedPatches(cfg.encoded, "validation", cfg.classes, cfg.bands, cfg.class_order)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(f"{cfg.encoded}: the train and validation splits must not be empty")
    channels = {r: len(b) for r, b in train_ds.groups.items()}
    model = build_model(cfg, channels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    state: dict[str, Any] = {"epoch": 0, "best_ap": -1.0, "since_best": 0, "history": []}
    if (out / LAST).exists():
        ckpt = torch.load(out / LAST, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        stats = BandStats(**ckpt["stats"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"])
        log.info("resuming %s at epoch %d", out, state["epoch"])
    else:
        stats = band_stats(train_ds, cfg.norm_samples, cfg.seed)
    tf = DeviceTransform(stats, cfg.resample, device, cfg.bands)
    val_loader = _loader(val_ds, cfg, False, cfg.seed)
    while state["epoch"] < cfg.epochs and state["since_best"] < cfg.patience:
        epoch = state["epoch"]
        model.train()
        t0, losses = time.perf_counter(), []
        loader = _loader(train_ds, cfg, True, cfg.seed + epoch)
        for step, batch in enumerate(loader):
            if cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with _autocast(device):
                loss = loss_fn(_forward(model, cfg, tf, batch).float(), batch["y"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            losses.append(value)
            if on_step is not None:
                on_step(step, value)
        scores, targets = predict(model, cfg, tf, val_loader, device)
        val = all_metrics(targets, scores)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_average_precision_macro": val["average_precision_macro"],
            "val_f1_macro": val["f1_macro"],
            "seconds": time.perf_counter() - t0,
        }
        state["history"].append(record)
        state["epoch"] = epoch + 1
        improved = val["average_precision_macro"] > state["best_ap"]
        if improved:
            state["best_ap"], state["since_best"] = val["average_precision_macro"], 0
        else:
            state["since_best"] += 1
        ckpt = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "state": state,
            "stats": asdict(stats),
            "config": cfg.model_dump(mode="json"),
            "channels": channels,
            "rng": torch.get_rng_state(),
            "bands": list(cfg.bands),
            "classes": class_names(cfg.classes, cfg.class_order),
        }
        if improved:
            _atomic_save(ckpt, out / BEST)
        _atomic_save(ckpt, out / LAST)
        log.info(
            "epoch %d: loss %.4f, val macro AP %.4f",
            epoch + 1,
            record["train_loss"],
            record["val_average_precision_macro"],
        )
    (out / "history.json").write_text(json.dumps(state["history"], indent=2))
    return state


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The ResNet-50 state dict in a foreign checkpoint (plain, or Lightning's, any key prefix)."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict or a checkpoint holding one")
    stem = [k for k in state if k.endswith("conv1.weight") and state[k].ndim == 4]
    if not stem:
        raise ModelError(
            f"{path}: no ResNet stem (conv1.weight); a torchvision ResNet-50 state dict is expected"
        )
    prefix = min(stem, key=len)[: -len("conv1.weight")]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_for_eval(
    checkpoint: Path,
    device: torch.device,
    encoded: Path | None,
    bands: tuple[str, ...] | None,
    class_order: str | None,
    norm_samples: int,
) -> tuple[TrainConfig, nn.Module, BandStats | None, list[dict[str, float]]]:
    """Configuration, model, band statistics and history of a checkpoint, ours or foreign.

    A foreign model's statistics are None: the caller computes them from the train split.
    """
    ckpt = torch.load(checkpoint, map_location=device, weights_only=False)
    if isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt:  # written by train()
        if "bands" not in ckpt:
            raise ModelError(
                f"{checkpoint}: written by an older ben_builder that stacked bands by resolution "
                "and did not record their order; train it again"
            )
        cfg = TrainConfig(**ckpt["config"])
        if bands is not None and tuple(bands) != tuple(ckpt["bands"]):
            raise ModelError(
                f"{checkpoint}: the model takes {','.join(ckpt['bands'])}; --bands "
                f"{','.join(bands)} disagrees (leave it out for checkpoints written here)"
            )
        if encoded is not None:
            cfg = cfg.model_copy(update={"encoded": encoded})
        channels = {int(k): v for k, v in ckpt["channels"].items()}
        model = build_model(cfg, channels)
        model.load_state_dict(ckpt["model"])
        stats = BandStats(
            {int(k): v for k, v in ckpt["stats"]["mean"].items()},
            {int(k): v for k, v in ckpt["stats"]["std"].items()},
        )
        return cfg, model, stats, ckpt["state"]["history"]
    if encoded is None or bands is None:
        raise ModelError(
            f"{checkpoint}: a model trained elsewhere needs --encoded (the archive to evaluate "
            "on) and --bands (its input bands in order, e.g. B01,B02,...,B12)"
        )
    state = _state_dict_of(ckpt, checkpoint)
    n_in, n_out = state["conv1.weight"].shape[1], state["fc.weight"].shape[0]
    if n_in != len(bands) or n_out not in (19, 43):
        raise ModelError(
            f"{checkpoint}: the model takes {n_in} bands and gives {n_out} classes; "
            f"--bands names {len(bands)} (19 or 43 classes are supported)"
        )
    cfg = TrainConfig(
        name=checkpoint.stem,
        encoded=encoded,
        output=checkpoint.parent,
        model="resnet50",
        classes=n_out,
        bands=tuple(bands),
        class_order=class_order or "official",
        norm_samples=norm_samples,
        num_workers=0,
    )
    model = resnet50(n_in, n_out)
    model.load_state_dict(state)
    return cfg, model, None, []


def evaluate(
    checkpoint: Path,
    split: str = "test",
    out: Path | None = None,
    encoded: Path | None = None,
    bands: tuple[str, ...] | None = None,
    class_order: str | None = None,
    norm_samples: int = 2000,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; write the results table, per-class table and curve.

    Args:
        checkpoint: ``best.pt``/``last.pt`` written by :func:`train`, or a model trained
            elsewhere: a torchvision ResNet-50 state dict (or a checkpoint holding one under
            ``state_dict``, any key prefix) with a stem for ``len(bands)`` bands.
        split: ``test``, ``validation`` or ``train``.
        out: Folder for the tables (default: the checkpoint's folder).
        encoded: Encoded archive to evaluate on (default: the one the model was trained on).
        bands: The model's input bands in order (needed for a foreign model; must match for
            ours).
        class_order: Order of a foreign model's outputs, ``official`` or ``alphabetical``.
        norm_samples: Train patches for a foreign model's band mean/std (inputs are normalised
            per band with the train split's statistics, as in training here).
    """
    device = pick_device("auto")
    cfg, model, stats, history = _load_for_eval(
        checkpoint, device, encoded, bands, class_order, norm_samples
    )
    out = out or checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device)
    train_ds = EncodedPatches(cfg.encoded, "train", cfg.classes, cfg.bands, cfg.class_order)
    if stats is None:
        used = min(norm_samples, len(train_ds))
        log.info("%s: band mean/std from %d train patches", checkpoint, used)
        stats = band_stats(train_ds, norm_samples, cfg.seed)
    tf = DeviceTransform(stats, cfg.resample, device, cfg.bands)
    ds = EncodedPatches(cfg.encoded, split, cfg.classes, cfg.bands, cfg.class_order)
    scores, targets = predict(model, cfg, tf, _loader(ds, cfg, False, cfg.seed), device)
    prior = np.broadcast_to(train_ds.targets.mean(axis=0), targets.shape)
    results = {
        "model": all_metrics(targets, scores),
        "baseline_train_frequencies": all_metrics(targets, prior),
    }
    names = class_names(cfg.classes, cfg.class_order)
    per_class = per_class_table(targets, scores, names)
    _write_tables(out, cfg, split, len(ds), results, per_class)
    if history:
        _plot_curve(out, history)
    return results


def _write_tables(
    out: Path,
    cfg: TrainConfig,
    split: str,
    n: int,
    results: dict[str, Any],
    per_class: list[dict[str, Any]],
) -> None:
    (out / "results.json").write_text(
        json.dumps({"split": split, "patches": n, **results, "per_class": per_class}, indent=2)
    )
    keys = list(results["model"])
    lines = [
        f"# Results: {cfg.name} ({cfg.model}, {cfg.classes} classes), {split} split, {n} patches",
        "",
        "| metric | model | baseline (train label frequencies) |",
        "|---|---|---|",
    ]
    base = results["baseline_train_frequencies"]
    lines += [f"| {k} | {results['model'][k]:.4f} | {base[k]:.4f} |" for k in keys]
    lines += [
        "",
        "## Per class",
        "",
        "| class | support | precision | recall | F1 | F2 | AP |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['class']} | {r['support']} | {r['precision']:.3f} | {r['recall']:.3f} | "
        f"{r['f1']:.3f} | {r['f2']:.3f} | {r['average_precision']:.3f} |"
        for r in per_class
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _plot_curve(out: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax2 = ax.twinx()
    ax2.plot(
        epochs,
        [h["val_average_precision_macro"] for h in history],
        "s-",
        color="C1",
        label="val macro AP",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("BCE loss")
    ax2.set_ylabel("macro average precision")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "training_curve.png", dpi=100)
    plt.close(fig)
