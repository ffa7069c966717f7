"""The generated BigEarthNet-S1 v1.0 folder against the real published S1 patch."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import tifffile

from ben_builder import bigearthnet
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.s1 import s1_patches
from ben_builder.sources.synthetic.writer import scene_for, write_dataset

REAL = Path(__file__).resolve().parent / "data" / "real-s1-patch"
REAL_NAME = "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48"
#: Tags whose values depend on the pixels or the place (strip offsets: the same layout is checked
#: through their count and sizes)
PLACE = {273, 33922, 34735, 34737}
VNJ = ProductRecipe(
    "T35VNJ", "L2A", "02.06", datetime(2018, 2, 4, 9, 41, 59), mission="S2B", relative_orbit=36
)
JSON_KEYS = {
    "acquisition_time",
    "coordinates",
    "labels",
    "projection",
    "scene_source",
    "corresponding_s2_patch",
}


def _tags(path: Path) -> dict[int, object]:
    with tifffile.TiffFile(path) as tf:
        return {t.code: t.value for t in tf.pages[0].tags.values()}


@pytest.fixture(scope="module")
def s1_dataset(tmp_path_factory):
    """A BigEarthNet acquisition whose upper-left cells v2 has, and one outside BigEarthNet."""
    root = tmp_path_factory.mktemp("s1")
    recipes = [
        VNJ,
        ProductRecipe(
            "T34VER", "L1C", "04.00", datetime(2018, 2, 15, 10, 0, 29), relative_orbit=36
        ),
    ]
    with rasterio.Env():
        return write_dataset(recipes, root, size_px=1260, seed=0, s1=True)


@pytest.mark.real_data
def test_s1_files_have_the_real_patchs_tags_and_json_keys(s1_dataset):
    real = {pol: _tags(REAL / f"{REAL_NAME}_{pol}.tif") for pol in ("VV", "VH")}
    folders = sorted(p for p in s1_dataset.s1.iterdir() if p.is_dir())
    assert folders
    for folder in folders[:20]:
        for pol in ("VV", "VH"):
            path = folder / f"{folder.name}_{pol}.tif"
            ours = _tags(path)
            assert set(ours) == set(real[pol]), path.name
            for code in set(ours) - PLACE:
                assert ours[code] == real[pol][code], (path.name, code)
            assert len(ours[273]) == len(real[pol][273])  # the same strips
            with rasterio.open(path) as ds, rasterio.open(REAL / f"{REAL_NAME}_{pol}.tif") as r:
                assert (ds.dtypes, ds.nodata, ds.res, ds.shape) == (
                    r.dtypes,
                    r.nodata,
                    r.res,
                    r.shape,
                )
                values = ds.read(1)
            low, high = (-40, 15) if pol == "VV" else (-50, 5)
            assert values.dtype == np.float32 and low < values.mean() < high
        meta = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())
        assert set(meta) == JSON_KEYS


def test_s1_names_and_places_follow_the_published_pairs(s1_dataset):
    """A BigEarthNet acquisition gets its published S1 names; another the naming rule."""
    pairs = bigearthnet.s1_pairs()
    names = {p.name for p in s1_dataset.s1.iterdir()}
    vnj = [n for n in names if "_35VNJ_" in n]
    ver = [n for n in names if "_34VER_" in n]
    assert vnj and set(vnj) <= set(pairs.values())
    assert len(ver) == 10 * 10 and all(
        n.startswith("S1A_IW_GRDH_1SDV_20180215T164041") for n in ver
    )
    corner = scene_for("T35VNJ", 1260, 0).geometry
    for name in vnj:
        meta = json.loads((s1_dataset.s1 / name / f"{name}_labels_metadata.json").read_text())
        assert pairs[meta["corresponding_s2_patch"]] == name
        x, y = (int(v) for v in name.rsplit("_", 2)[1:])
        with rasterio.open(s1_dataset.s1 / name / f"{name}_VV.tif") as ds:
            assert ds.crs.to_epsg() == 32635
            assert (ds.transform.c, ds.transform.f) == (
                corner.ulx_m + 1200 * x,
                corner.uly_m - 1200 * y,
            )
    # only the cells of the scene's grid that v2 has, each once
    cells = [(p.x, p.y) for p in s1_patches(VNJ, scene_for("T35VNJ", 1260, 0))]
    assert len(cells) == len(set(cells)) == len(vnj) and all(x < 10 and y < 10 for x, y in cells)
