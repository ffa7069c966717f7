"""A BigEarthNet-S1 v1.0 folder for synthetic products, in the published archive's format.

BigEarthNet-S1 v1.0 holds one folder per Sentinel-1 patch at its top:
``<s1_name>/<s1_name>_VV.tif``, ``_VH.tif`` (float32 backscatter in dB, 120 x 120 at 10 m,
uncompressed, no nodata value) and ``<s1_name>_labels_metadata.json`` (``acquisition_time``,
``coordinates``, ``labels``, ``projection``, ``scene_source``, ``corresponding_s2_patch``). An S1
name is ``<S1 product start>_<tile without T>_<x>_<y>``, x and y not zero-padded, on the same
cell as its S2 patch.

For an acquisition of BigEarthNet v2 the folder holds exactly v2's patches of it, under the
published S1 names (``data_specs/bigearthnet/v1_s2_s1_pairs.csv.bz2``), so a reproduction of the
demo's BigEarthNet-named products runs its S1 stage offline. Other acquisitions get every cell,
named by the rule with an S1 pass :data:`S1_AFTER` after the S2 sensing time. The backscatter is
made from the scene's land cover (water dark, towns bright, VH below VV) with speckle; it is
not a radar simulation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from ben_builder import bigearthnet
from ben_builder.archive import s1_product_start
from ben_builder.files import write_bytes
from ben_builder.product.names import acquisition
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.scene import CODES, Scene, stable_seed

log = logging.getLogger(__name__)

#: The S1 pass paired with an S2 acquisition outside BigEarthNet (a same-day evening pass).
S1_AFTER = timedelta(hours=6, minutes=40, seconds=12)
#: Side of a patch in 10 m pixels.
PATCH_PX = 120
#: Mean backscatter (dB) of a land-cover family: VV, VH.
_BACKSCATTER_DB: dict[str, tuple[float, float]] = {
    "water": (-21.0, -28.0),
    "urban": (2.0, -8.0),
    "broadleaf": (-7.5, -13.5),
    "conifer": (-7.0, -13.0),
    "grass": (-10.0, -17.0),
    "arable": (-11.0, -18.5),
    "sand": (-16.0, -25.0),
    "rock": (-9.0, -17.5),
    "wetland": (-12.0, -19.0),
    "shrub": (-9.5, -16.0),
    "burnt": (-13.0, -20.0),
    "snow": (-12.0, -21.0),
}
_UNCOVERED_DB = (-14.0, -22.0)


@dataclass(frozen=True)
class S1Patch:
    """One S1 patch to write: its name, cell and the S2 patch it is paired with."""

    s1_name: str
    s2v1_name: str
    x: int
    y: int


def paired_s1_start(recipe: ProductRecipe) -> str:
    """The S1 product start (``S1A_IW_GRDH_1SDV_<time>``) paired by rule with ``recipe``."""
    return f"S1A_IW_GRDH_1SDV_{recipe.sensing + S1_AFTER:%Y%m%dT%H%M%S}"


def s1_patches(recipe: ProductRecipe, scene: Scene) -> list[S1Patch]:
    """The S1 patches of ``recipe``'s acquisition over ``scene``'s grid.

    A BigEarthNet v2 acquisition: its published pairs on the scene's cells. Others: every cell,
    named by the rule.
    """
    n = int(scene.geometry.size_m // (PATCH_PX * 10))
    v1_names = bigearthnet.v1_names_of(recipe.name)
    if v1_names:
        pairs = bigearthnet.s1_pairs()
        return [
            S1Patch(pairs[v1], v1, x, y)
            for (x, y), v1 in sorted(v1_names.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            if x < n and y < n and v1 in pairs
        ]
    start, tile = paired_s1_start(recipe), recipe.tile_id[1:]
    sensing = f"{recipe.sensing:%Y%m%dT%H%M%S}"
    return [
        S1Patch(f"{start}_{tile}_{x}_{y}", f"{recipe.mission}_MSIL2A_{sensing}_{x}_{y}", x, y)
        for y in range(n)
        for x in range(n)
    ]


def render_s1(codes: np.ndarray, seed: int, patch: S1Patch) -> dict[str, np.ndarray]:
    """VV and VH (float32 dB) of one patch from its 10 m land-cover ``codes``, plus speckle."""
    rng = np.random.default_rng(stable_seed("s1", seed, patch.s1_name))
    out = {}
    for i, pol in enumerate(("VV", "VH")):
        means = np.full(codes.shape, _UNCOVERED_DB[i], np.float32)
        for code, (family, _, _) in CODES.items():
            means[codes == int(code)] = _BACKSCATTER_DB[family][i]
        speckle = 10 * np.log10(rng.gamma(4.0, 0.25, codes.shape))  # 4-look intensity, in dB
        out[pol] = (means + speckle).astype(np.float32)
    return out


def s1_tiff_bytes(values: np.ndarray, crs: CRS, ulx: float, uly: float) -> bytes:
    """A float32 S1 patch file as BigEarthNet-S1 publishes it (uncompressed, no nodata)."""
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=values.shape[1],
            height=values.shape[0],
            count=1,
            dtype="float32",
            crs=crs,
            transform=Affine(10.0, 0.0, ulx, 0.0, -10.0, uly),
        ) as ds:
            ds.write(values, 1)
        return bytes(mem.read())


def s1_metadata(patch: S1Patch, crs: CRS, ulx: float, uly: float, start: str) -> dict[str, object]:
    """The ``<s1_name>_labels_metadata.json`` of a BigEarthNet-S1 v1.0 patch."""
    side = PATCH_PX * 10.0
    acquired = datetime.strptime(start.rsplit("_", 1)[1], "%Y%m%dT%H%M%S")
    return {
        "acquisition_time": acquired.strftime("%Y-%m-%d %H:%M:%S"),
        "coordinates": {"ulx": ulx, "uly": uly, "lrx": ulx + side, "lry": uly - side},
        "labels": [],
        "projection": crs.to_wkt(),
        "scene_source": start,
        "corresponding_s2_patch": patch.s2v1_name,
    }


def write_s1_v1(recipes: Iterable[ProductRecipe], scenes: dict[str, Scene], out_dir: Path) -> Path:
    """Write the BigEarthNet-S1 v1.0 folder of ``recipes``' acquisitions under ``out_dir``.

    One acquisition's L1C and L2A share their S1 patches. A patch already written is kept.

    Returns:
        The folder (``out_dir``).
    """
    seen: set[str] = set()
    written = 0
    for r in recipes:
        acq = acquisition(r.name)
        if acq in seen:
            continue
        seen.add(acq)
        scene = scenes[r.tile_id]
        crs = CRS.from_epsg(scene.geometry.epsg)
        codes = scene.codes_at(10)
        for patch in s1_patches(r, scene):
            written += _write_patch(patch, scene, codes, crs, out_dir)
    log.info("wrote %d BigEarthNet-S1 v1.0 patches under %s", written, out_dir)
    return out_dir


def _write_patch(patch: S1Patch, scene: Scene, codes: np.ndarray, crs: CRS, out_dir: Path) -> int:
    folder = out_dir / patch.s1_name
    meta = folder / f"{patch.s1_name}_labels_metadata.json"
    if meta.exists():
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    ulx = scene.geometry.ulx_m + patch.x * PATCH_PX * 10
    uly = scene.geometry.uly_m - patch.y * PATCH_PX * 10
    rows = slice(patch.y * PATCH_PX, (patch.y + 1) * PATCH_PX)
    cols = slice(patch.x * PATCH_PX, (patch.x + 1) * PATCH_PX)
    block = codes[rows, cols]
    for pol, values in render_s1(block, scene.seed, patch).items():
        write_bytes(folder / f"{patch.s1_name}_{pol}.tif", s1_tiff_bytes(values, crs, ulx, uly))
    start = s1_product_start(patch.s1_name)
    text = json.dumps(s1_metadata(patch, crs, ulx, uly, start), indent=2, sort_keys=True)
    write_bytes(meta, text.encode())  # last: marks the patch complete
    return 1
