"""Screening rules: pure functions from band and mask arrays to per-patch decisions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ben_builder.patches.grid import PatchGrid
from ben_builder.specs import ScreeningSpec


@dataclass(frozen=True)
class Screening:
    """Per-patch screening outcome on a grid; every array is (rows, cols).

    Attributes:
        nodata_fraction: Largest share of no-data pixels over the bands.
        cloud_or_shadow_fraction: Share of cloud / cloud-shadow pixels (NaN: no mask).
        snow_fraction: Share of snow pixels (NaN: no mask).
        drop_nodata: Patch dropped for no-data.
        cloud_or_shadow: Patch flagged for cloud or shadow.
        snow: Patch flagged for seasonal snow.
    """

    nodata_fraction: np.ndarray
    cloud_or_shadow_fraction: np.ndarray
    snow_fraction: np.ndarray
    drop_nodata: np.ndarray
    cloud_or_shadow: np.ndarray
    snow: np.ndarray


@dataclass(frozen=True)
class MaskSet:
    """Cloud/shadow and snow masks of a product at one resolution (None where unavailable)."""

    resolution_m: int
    cloud_or_shadow: np.ndarray | None
    snow: np.ndarray | None


ROWS_PER_STEP = 4  # patch rows compared at a time (~5 MB of booleans at 10 m)


def nodata_fraction(
    grid: PatchGrid, bands: Iterable[tuple[np.ndarray, int]], nodata: int = 0
) -> np.ndarray:
    """Largest per-band share of ``nodata`` pixels in each patch.

    Args:
        grid: The patch grid.
        bands: ``(array, resolution_m)`` for each band.
        nodata: The no-data value.
    """
    out = np.zeros(grid.shape)
    for arr, res in bands:
        blocks = grid.blocks(arr, res)
        for y in range(0, grid.shape[0], ROWS_PER_STEP):  # small temporaries, not a whole band
            hit = blocks[y : y + ROWS_PER_STEP] == nodata
            if not hit.any():  # most of a tile: no share to count
                continue
            share = hit.mean(axis=(2, 3))
            np.maximum(out[y : y + ROWS_PER_STEP], share, out=out[y : y + ROWS_PER_STEP])
    return out


def masks_from_scl(scl: np.ndarray, spec: ScreeningSpec) -> MaskSet:
    """Cloud/shadow and snow masks from an L2A Scene Classification map (20 m)."""
    return MaskSet(
        resolution_m=20,
        cloud_or_shadow=_one_of(scl, spec.scl_cloud_or_shadow),
        snow=_one_of(scl, spec.scl_snow),
    )


def _one_of(arr: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """``np.isin(arr, values)``.

    A byte array is looked up in a 256-entry table instead (the tile's SCL: several times faster).
    """
    values = list(values)
    if arr.dtype != np.uint8:
        return np.isin(arr, values)
    table = np.zeros(256, bool)
    table[[v for v in values if 0 <= v < 256]] = True
    return table[arr]


def masks_from_classi(classi: np.ndarray) -> MaskSet:
    """Masks from L1C ``MSK_CLASSI_B00`` (60 m; bands opaque cloud, cirrus, snow)."""
    if classi.ndim != 3 or classi.shape[0] < 3:
        raise ValueError(f"MSK_CLASSI must have 3 bands, got shape {classi.shape}")
    return MaskSet(
        resolution_m=60, cloud_or_shadow=(classi[0] > 0) | (classi[1] > 0), snow=classi[2] > 0
    )


def _fraction(grid: PatchGrid, mask: np.ndarray | None, res: int) -> np.ndarray:
    if mask is None:
        return np.full(grid.shape, np.nan)
    return grid.blocks(mask.astype(np.uint8), res).mean(axis=(2, 3))


def screen(
    grid: PatchGrid, nodata_frac: np.ndarray, masks: MaskSet, spec: ScreeningSpec
) -> Screening:
    """Apply the screening thresholds to every patch."""
    cs = _fraction(grid, masks.cloud_or_shadow, masks.resolution_m)
    sn = _fraction(grid, masks.snow, masks.resolution_m)
    with np.errstate(invalid="ignore"):
        return Screening(
            nodata_fraction=nodata_frac,
            cloud_or_shadow_fraction=cs,
            snow_fraction=sn,
            drop_nodata=nodata_frac > spec.nodata_max_fraction,
            cloud_or_shadow=np.nan_to_num(cs) > spec.cloud_or_shadow_min_fraction,
            snow=np.nan_to_num(sn) > spec.snow_min_fraction,
        )


#: Per-tile counts, in the order summaries and reports show them.
COUNT_KEYS = (
    "candidates",
    "dropped_nodata",
    "dropped_unlabeled",
    "dropped_not_in_v1",
    "dropped_overlap",
    "dropped_outside_aoi",
    "flagged_cloud_or_shadow",
    "flagged_snow",
    "kept",
)


def summary(counts: Mapping[str, int]) -> str:
    """One line of per-tile counts, in a fixed order."""
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in COUNT_KEYS)
