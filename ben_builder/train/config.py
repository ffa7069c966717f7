"""Training configurations (``pipelines/train-*.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from ben_builder.config import resolve_paths
from ben_builder.specs import load_yaml, parse_model

ALL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")


class TrainConfig(BaseModel):
    """One training run on an encoded archive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    encoded: Path = Field(description="Folder written by `ben-builder encode`.")
    output: Path
    model: Literal["multibranch", "resnet50"] = "multibranch"
    classes: Literal[19, 43] = 19
    class_order: Literal["official", "alphabetical"] = Field(
        "official", description="Order of the model's outputs (configilm: alphabetical)."
    )
    bands: tuple[str, ...] = Field(
        ALL_BANDS, description="Input bands, in the order the model takes them (ESA order)."
    )
    resample: Literal["bilinear", "bicubic"] = "bilinear"
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(64, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    num_workers: int = Field(2, ge=0)
    seed: int = 0
    patience: int = Field(3, gt=0, description="Epochs without a better validation macro AP.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_steps_per_epoch: int | None = Field(None, gt=0)
    norm_samples: int = Field(2000, gt=0, description="Train patches used for band mean/std.")


def load_train_config(path: Path) -> TrainConfig:
    """Load a training configuration, resolving relative paths against its folder."""
    cfg = parse_model(TrainConfig, load_yaml(Path(path)), path)
    return cast(TrainConfig, resolve_paths(cfg, Path(path).resolve().parent))
