"""A PyTorch dataset over the encoded LMDB: native resolutions out, resampling on the device.

Samples leave the loader at their native sizes (120/60/20 px), grouped by resolution as int32
tensors; :class:`DeviceTransform` normalises (per-band mean/std of the train split) and resamples
the 20 m and 60 m groups on the device, a batch at a time. Models that take one stack get the
bands in the order declared (ESA order, B01 ... B8A, B09, B11, B12, by default: the order of
torchgeo and the official tools), and a checkpoint records that order and the class order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.numpy import load
from torch.utils.data import Dataset

from ben_builder import archive, specs
from ben_builder.encode import DB, LABELS43
from ben_builder.errors import ProductNotFoundError

RES_GROUPS = (10, 20, 60)


CLASS_ORDERS = ("official", "alphabetical")


def class_names(classes: int, order: str = "official") -> list[str]:
    """Names of the 19 classes or the 43 v1 labels.

    Args:
        classes: 19 or 43.
        order: ``official`` (the nomenclature's order; CLC code order for 43) or
            ``alphabetical`` (configilm's order, and the order of the published label lists).
    """
    if order not in CLASS_ORDERS:
        raise ValueError(f"class order {order!r}: use one of {', '.join(CLASS_ORDERS)}")
    if classes == 19:
        names = list(specs.nomenclature().names)
    else:
        v1 = specs.clc().v1_names
        names = [v1[c] for c in sorted(v1)]
    return sorted(names) if order == "alphabetical" else names


def band_groups(bands: tuple[str, ...]) -> dict[int, list[str]]:
    """Bands by resolution, in spec order."""
    res = {b.name: b.resolution_m for b in specs.bands().bands}
    unknown = set(bands) - set(res)
    if unknown:
        raise ValueError(f"unknown bands {sorted(unknown)}")
    return {
        r: [b for b in bands if res[b] == r] for r in RES_GROUPS if any(res[b] == r for b in bands)
    }


_ENVS: dict[tuple[int, str], Any] = {}


def _open_env(path: Path) -> Any:
    key = (os.getpid(), str(path))
    if key not in _ENVS:
        _ENVS[key] = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    return _ENVS[key]


class EncodedPatches(Dataset[dict[str, Any]]):
    """Patches of one split from an encoded archive.

    Each item: ``{"x10": (n10, 120, 120), "x20": ..., "x60": ..., "y": (classes,) float}``.
    """

    def __init__(
        self,
        encoded: Path,
        split: str | None,
        classes: int,
        bands: tuple[str, ...],
        class_order: str = "official",
    ) -> None:
        self.path = Path(encoded) / DB
        meta = pd.read_parquet(Path(encoded) / archive.METADATA)
        if split is not None:
            meta = meta[meta["split"] == split]
        if classes == 43:
            if not (Path(encoded) / LABELS43).exists():
                raise ProductNotFoundError(
                    f"{Path(encoded) / LABELS43}: 43-class training needs the labels43 of an "
                    "archive built by ben_builder (the published v2 has 19-class labels only)"
                )
            labels43 = pd.read_parquet(Path(encoded) / LABELS43)
            meta = meta.merge(labels43, on="patch_id", how="left", validate="one_to_one")
        self.keys = [k.encode() for k in meta["patch_id"]]
        names = class_names(classes, class_order)
        column = "labels" if classes == 19 else "labels43"
        index = {n: i for i, n in enumerate(names)}
        self.targets = np.zeros((len(meta), len(names)), np.float32)
        for row, labels in enumerate(meta[column]):
            for label in labels:
                self.targets[row, index[label]] = 1.0
        self.groups = band_groups(bands)
        self._env: Any = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_env"] = None  # an LMDB environment never crosses processes
        return state

    def _txn(self) -> Any:
        if self._env is None:  # opened lazily, once per process (LMDB forbids opening twice)
            self._env = _open_env(self.path)
        return self._env.begin(buffers=True)

    def __getitem__(self, i: int) -> dict[str, Any]:
        with self._txn() as txn:
            arrays = load(bytes(txn.get(self.keys[i])))
        item: dict[str, Any] = {"y": torch.from_numpy(self.targets[i])}
        for res, names in self.groups.items():
            stack = np.stack([arrays[b] for b in names]).astype(np.int32)
            item[f"x{res}"] = torch.from_numpy(stack)
        return item


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and std of the train split, per resolution group."""

    mean: dict[int, list[float]]
    std: dict[int, list[float]]


def band_stats(ds: EncodedPatches, samples: int, seed: int) -> BandStats:
    """Mean and std of each band over up to ``samples`` train patches (a seeded subset)."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ds))[:samples]
    sums: dict[int, np.ndarray] = {}
    sq: dict[int, np.ndarray] = {}
    count: dict[int, int] = {}
    for i in idx:
        item = ds[int(i)]
        for res in ds.groups:
            x = item[f"x{res}"].numpy().astype(np.float64)
            sums[res] = sums.get(res, 0) + x.sum(axis=(1, 2))
            sq[res] = sq.get(res, 0) + (x**2).sum(axis=(1, 2))
            count[res] = count.get(res, 0) + x.shape[1] * x.shape[2]
    mean = {r: (sums[r] / count[r]) for r in sums}
    std = {r: np.sqrt(np.maximum(sq[r] / count[r] - mean[r] ** 2, 1e-6)) for r in sums}
    return BandStats({r: mean[r].tolist() for r in mean}, {r: std[r].tolist() for r in std})


class DeviceTransform:
    """Normalise and (optionally) resample a batch on its device."""

    def __init__(
        self, stats: BandStats, mode: str, device: torch.device, bands: tuple[str, ...]
    ) -> None:
        self.mode = mode
        grouped = [b for names in band_groups(bands).values() for b in names]
        # from the loader's resolution groups to the declared band order
        self.order = torch.tensor([grouped.index(b) for b in bands], device=device)
        self.mean = {
            r: torch.tensor(v, device=device).view(1, -1, 1, 1) for r, v in stats.mean.items()
        }
        self.std = {
            r: torch.tensor(v, device=device).view(1, -1, 1, 1) for r, v in stats.std.items()
        }

    def native(self, batch: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Normalised float tensors per resolution, native sizes."""
        return {
            r: (batch[f"x{r}"].float() - self.mean[r]) / self.std[r]
            for r in RES_GROUPS
            if r in self.mean
        }

    def stacked(self, batch: dict[str, torch.Tensor], size: int = 120) -> torch.Tensor:
        """All bands resampled to ``size`` px, stacked in the declared band order."""
        parts = []
        for x in self.native(batch).values():
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode=self.mode, align_corners=False)
            parts.append(x)
        return torch.cat(parts, dim=1).index_select(1, self.order)
