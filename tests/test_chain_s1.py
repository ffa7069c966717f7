"""The S1 stage: published pairs placed as v2 lays them out, checked, kept in step with inputs."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime

import pandas as pd
import pytest
import rasterio

from ben_builder import archive
from ben_builder.chain.s1 import attach_s1
from ben_builder.errors import ProductNotFoundError
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.s1 import s1_patches
from ben_builder.sources.synthetic.writer import scene_for, write_dataset

VNJ = ProductRecipe(
    "T35VNJ", "L2A", "02.06", datetime(2018, 2, 4, 9, 41, 59), mission="S2B", relative_orbit=36
)


@pytest.fixture()
def s1_source(tmp_path):
    with rasterio.Env():
        written = write_dataset([VNJ], tmp_path / "inputs", size_px=1260, seed=0, s1=True)
    scene = scene_for("T35VNJ", 1260, 0)
    g = scene.geometry
    rows = [
        {
            "patch_id": f"{VNJ.stem}_{p.x:02d}_{p.y:02d}",
            "s1_name": p.s1_name,
            "s2v1_name": p.s2v1_name,
            "epsg": g.epsg,
            "ulx_m": g.ulx_m + 1200 * p.x,
            "uly_m": g.uly_m - 1200 * p.y,
        }
        for p in s1_patches(VNJ, scene)
    ]
    assert len(rows) > 5
    return written.s1, pd.DataFrame(rows)


def test_pairs_are_linked_where_v2_puts_them_and_reruns_follow_the_inputs(tmp_path, s1_source):
    src, frame = s1_source
    out = tmp_path / "archive"
    first = attach_s1(out, frame, src)
    assert (first.placed, first.kept, first.removed, first.failures) == (2 * len(frame), 0, 0, [])
    for name in frame["s1_name"]:
        for pol in ("VV", "VH"):
            ours = archive.s1_patch_dir(out, name) / f"{name}_{pol}.tif"
            theirs = src / name / f"{name}_{pol}.tif"
            assert ours.read_bytes() == theirs.read_bytes()
            assert os.path.samefile(ours, theirs)  # a hard link on one file system
    again = attach_s1(out, frame, src)
    assert (again.placed, again.kept, again.removed) == (0, 2 * len(frame), 0)
    # an input changed: replaced; a row gone: its folder gone (with an emptied product folder)
    name = frame["s1_name"].iloc[0]
    changed = src / name / f"{name}_VV.tif"
    data = changed.read_bytes()
    changed.unlink()
    changed.write_bytes(data[:-4] + b"\0\0\0\0")
    third = attach_s1(out, frame.iloc[:-1], src)
    assert (third.placed, third.removed) == (1, 1)
    placed = archive.s1_patch_dir(out, name) / f"{name}_VV.tif"
    assert placed.read_bytes() == changed.read_bytes()
    gone = frame["s1_name"].iloc[-1]
    assert not (archive.s1_patch_dir(out, gone)).exists()


def test_a_patch_that_does_not_fit_its_pair_is_a_failure_of_that_patch(tmp_path, s1_source):
    src, frame = s1_source
    a, b, c = frame["s1_name"].iloc[:3]
    meta = src / a / f"{a}_labels_metadata.json"
    doc = json.loads(meta.read_text())
    doc["corresponding_s2_patch"] = "S2B_MSIL2A_20180204T094159_99_99"
    meta.write_text(json.dumps(doc))
    with rasterio.open(src / b / f"{b}_VH.tif", "r+") as ds:  # moved by one pixel
        ds.transform = ds.transform @ ds.transform.translation(1, 0)
    shutil.rmtree(src / c)
    out = tmp_path / "archive"
    outcome = attach_s1(out, frame, src)
    errors = {f.s1_name: f.error for f in outcome.failures}
    assert set(errors) == {a, b, c}
    assert "names S2 patch 'S2B_MSIL2A_20180204T094159_99_99'" in errors[a]
    assert f"{b}_VH.tif" in errors[b] and "does not lie on its S2 patch" in errors[b]
    assert "no folder" in errors[c]
    assert outcome.placed == 2 * (len(frame) - 3)
    assert not (archive.s1_patch_dir(out, a)).exists()
    with pytest.raises(ProductNotFoundError, match="BigEarthNet-S1 v1.0 folder"):
        attach_s1(out, frame, tmp_path / "absent")
