"""A reproduction's Sentinel-1 half: each patch's S1 pair taken from BigEarthNet-S1 v1.0.

BigEarthNet v2 kept the S1 patches of BigEarthNet-S1 v1.0 under their names and laid them out
as ``BigEarthNet-S1/<S1 product start>/<s1_name>/<s1_name>_VV.tif`` and ``_VH.tif``. This stage
puts each metadata row's pair there, byte for byte: a hard link where the file system allows,
a copy otherwise. Before a patch is taken, its files must lie on its S2 patch (same CRS and
geotransform, 120 x 120) and its JSON must name the S2 patch it is paired with. A patch that
fails is recorded (patch, S1 name, reason) and left out; the run goes on.

The archive's ``BigEarthNet-S1/`` is the image of the metadata and the S1 folder: a file in
place that is the source's (the same inode, or the same size and modification time for a copy)
is kept, a changed one is replaced, and folders no row asks for any more are removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import rasterio
from affine import Affine
from rasterio.errors import RasterioIOError

from ben_builder import archive
from ben_builder.errors import ProductNotFoundError

log = logging.getLogger(__name__)

POLARISATIONS = ("VV", "VH")
#: Side of an S1 patch in 10 m pixels.
PATCH_PX = 120


@dataclass(frozen=True)
class S1Failure:
    """An S1 patch that could not be taken: which, and why."""

    patch_id: str
    s1_name: str
    error: str


@dataclass
class S1Outcome:
    """What the S1 stage did."""

    placed: int = 0
    kept: int = 0
    removed: int = 0
    failures: list[S1Failure] = field(default_factory=list)


def attach_s1(root: Path, frame: pd.DataFrame, s1_v1: Path) -> S1Outcome:
    """Put the S1 pair of every row of ``frame`` that has one into ``root``'s ``BigEarthNet-S1``.

    Args:
        root: The archive.
        frame: The metadata rows (``patch_id``, ``s1_name``, ``s2v1_name``, ``epsg``, ``ulx_m``,
            ``uly_m``).
        s1_v1: The BigEarthNet-S1 v1.0 folder.

    Raises:
        ProductNotFoundError: ``s1_v1`` is not a folder.
    """
    if not s1_v1.is_dir():
        raise ProductNotFoundError(
            f"{s1_v1}: no such folder; s1.bigearthnet_v1 must be the BigEarthNet-S1 v1.0 folder "
            "(one <s1_name>/ folder per patch)"
        )
    outcome = S1Outcome()
    wanted: set[Path] = set()
    rows = frame[frame["s1_name"].notna()] if "s1_name" in frame else frame.iloc[:0]
    for row in rows.itertuples():
        s1_name, patch_id = str(row.s1_name), str(row.patch_id)
        dest = archive.s1_patch_dir(root, s1_name)
        problem = _check(s1_v1 / s1_name, row)
        if problem is not None:
            outcome.failures.append(S1Failure(patch_id, s1_name, problem))
            continue
        wanted.add(dest)
        for pol in POLARISATIONS:
            name = f"{s1_name}_{pol}.tif"
            if _place(s1_v1 / s1_name / name, dest / name):
                outcome.placed += 1
            else:
                outcome.kept += 1
    outcome.removed = _remove_unwanted(root / archive.S1_DIR, wanted)
    if outcome.failures:
        log.warning("%d S1 patches could not be taken (see the report)", len(outcome.failures))
    return outcome


def _check(src: Path, row: Any) -> str | None:
    """Why the S1 patch folder ``src`` cannot be taken for ``row``'s S2 patch (None: it can)."""
    name = src.name
    meta_path = src / f"{name}_labels_metadata.json"
    if not src.is_dir():
        return f"no folder {name} in the BigEarthNet-S1 folder"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"{meta_path.name}: unreadable ({exc})"
    paired = meta.get("corresponding_s2_patch") if isinstance(meta, dict) else None
    s2v1 = getattr(row, "s2v1_name", None)
    if paired != s2v1:
        return f"{meta_path.name} names S2 patch {paired!r}, the published pair is {s2v1!r}"
    ulx, uly = float(row.ulx_m), float(row.uly_m)
    want = Affine(10.0, 0.0, ulx, 0.0, -10.0, uly)
    epsg = int(row.epsg)
    for pol in POLARISATIONS:
        path = src / f"{name}_{pol}.tif"
        try:
            with rasterio.open(path) as ds:
                crs, transform, shape = ds.crs, ds.transform, ds.shape
        except RasterioIOError as exc:
            return f"{path.name}: unreadable ({exc})"
        if crs is None or crs.to_epsg() != epsg:
            return f"{path.name}: CRS {crs} is not its S2 patch's EPSG:{epsg}"
        if not transform.almost_equals(want) or shape != (PATCH_PX, PATCH_PX):
            return (
                f"{path.name}: {shape[0]} x {shape[1]} px at ({transform.c}, {transform.f}) does "
                f"not lie on its S2 patch ({PATCH_PX} x {PATCH_PX} px at ({ulx}, {uly}))"
            )
    return None


def _same_file(src: Path, dest: Path) -> bool:
    """Whether ``dest`` is ``src`` (a hard link) or an unchanged copy of it."""
    try:
        a, b = src.stat(), dest.stat()
    except FileNotFoundError:
        return False
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def _place(src: Path, dest: Path) -> bool:
    """Link (else copy) ``src`` to ``dest`` unless it is in place; return whether it was placed."""
    if _same_file(src, dest):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed: a copy, its time kept
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)
    return True


def _remove_unwanted(s1_root: Path, wanted: set[Path]) -> int:
    """Remove the patch folders under ``s1_root`` no row asks for; return how many."""
    if not s1_root.is_dir():
        return 0
    removed = 0
    for start in sorted(p for p in s1_root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in start.iterdir() if p.is_dir()):
            if folder not in wanted:
                shutil.rmtree(folder)
                removed += 1
        if not any(start.iterdir()):
            start.rmdir()
    return removed
