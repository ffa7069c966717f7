"""Cutting products into patches: names, geometry and pixels against the generator's arrays."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import rasterio

from ben_builder import archive, specs
from ben_builder.chain.product import Options, process_product
from ben_builder.files import PARTIAL
from ben_builder.patches.grid import PatchGrid
from ben_builder.sources.synthetic.scene import render_band
from tests.helpers import digest_tree

BANDS = specs.bands().bands


@pytest.mark.parametrize(
    "level,baseline", [("L2A", "04.00"), ("L2A", "02.05"), ("L1C", "02.05"), ("L1C", "04.00")]
)
def test_patches_match_generator(synthetic, tmp_path, level, baseline):
    recipe = synthetic.find(level=level, baseline=baseline)
    out = tmp_path / "archive"
    summary = process_product(synthetic.path_of(recipe), out)
    scene = synthetic.scene(recipe)
    acq = recipe.acquisition(scene)
    truth = pd.read_parquet(synthetic.root / "ground_truth" / f"{recipe.stem}.parquet")
    grid = PatchGrid(scene.geometry, 1200)

    assert summary.candidates == len(grid) == 100
    expected_ids = sorted(truth.loc[~truth.has_nodata, "patch_id"])
    product_dir = out / archive.S2_DIR / recipe.stem
    assert sorted(p.name for p in product_dir.iterdir()) == expected_ids
    assert summary.kept == len(expected_ids) and summary.dropped_nodata == truth.has_nodata.sum()

    full = {b.name: render_band(scene, acq, b.name, b.resolution_m, level) for b in BANDS}
    for patch in grid:
        pid = patch.name(recipe.stem)
        if pid not in expected_ids:
            continue
        for b in BANDS:
            f = product_dir / pid / f"{pid}_{b.name}.tif"
            with rasterio.open(f) as ds:
                assert ds.driver == "GTiff" and ds.count == 1
                assert (ds.width, ds.height) == (b.size_px, b.size_px)
                assert ds.dtypes[0] == "uint16" and ds.nodata == 0
                assert ds.crs.to_epsg() == scene.geometry.epsg
                assert ds.transform == patch.transform(b.resolution_m)
                assert ds.profile.get("compress") is None
                k = b.size_px
                want = full[b.name][
                    patch.y * k : (patch.y + 1) * k, patch.x * k : (patch.x + 1) * k
                ]
                np.testing.assert_array_equal(ds.read(1), want)

    meta = pd.read_parquet(out / archive.PARTS_DIR / f"{recipe.stem}.parquet")
    assert sorted(meta.patch_id) == expected_ids
    assert set(meta.split) <= {"train", "validation", "test"}


def test_patch_names_use_product_stem_and_grid_indices(synthetic, tmp_path):
    recipe = synthetic.find(level="L2A", baseline="02.05")
    process_product(synthetic.path_of(recipe), tmp_path)
    names = {p.name for p in (tmp_path / archive.S2_DIR / recipe.stem).iterdir()}
    assert f"{recipe.stem}_00_00" in names and f"{recipe.stem}_09_09" in names
    assert not any(n.endswith("_10") or "_10_" in n for n in names)  # partial row/col dropped


def test_rerun_skips_and_is_byte_identical(synthetic, tmp_path):
    recipe = synthetic.find(level="L1C", baseline="04.00")
    a, b = tmp_path / "a", tmp_path / "b"
    process_product(synthetic.path_of(recipe), a)
    again = process_product(synthetic.path_of(recipe), a)
    assert again.skipped
    process_product(synthetic.path_of(recipe), b)
    assert digest_tree(a) == digest_tree(b)

    # an interrupted run: completion record gone, some files missing, a stale partial file
    os.remove(archive.part_path(a, recipe.stem))
    files = sorted((a / archive.S2_DIR).rglob("*.tif"))
    for f in files[::7]:
        f.unlink()
    stale = files[3].with_name(files[3].name + PARTIAL)
    stale.write_bytes(b"half")
    resumed = process_product(synthetic.path_of(recipe), a)
    # an unfinished product is redone whole: nothing of the interrupted run is trusted
    assert not resumed.skipped and resumed.files_written == again.files_written == len(files)
    assert not stale.exists()
    assert digest_tree(a) == digest_tree(b)


def _stop_mid_write(cmd, out, stem, attempts=8):
    """Start ``cmd`` and SIGSTOP it once it has written some patch files but not finished.

    A small product is written in a fraction of a second, so a run that finished before it could
    be stopped is discarded and started again.
    """
    for _ in range(attempts):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        folder = out / archive.S2_DIR / stem
        while proc.poll() is None and not (folder.exists() and any(folder.rglob("*.tif"))):
            time.sleep(0.001)
        proc.send_signal(signal.SIGSTOP)
        if proc.poll() is None and not archive.part_path(out, stem).exists():
            return proc
        proc.kill()
        proc.wait()
    pytest.fail("could not catch the run in the middle of writing")


def test_sigkill_mid_write_then_rerun_gives_identical_archive(synthetic, tmp_path):
    recipe = synthetic.find(level="L2A", baseline="04.00")
    product = synthetic.path_of(recipe)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    process_product(product, ref)
    cmd = [sys.executable, "-m", "ben_builder.cli", "patch", str(product), "--out", str(killed)]
    proc = _stop_mid_write(cmd, killed, recipe.stem)
    written = len(list((killed / archive.S2_DIR).rglob("*.tif")))
    assert 0 < written < len(list((ref / archive.S2_DIR).rglob("*.tif")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not archive.part_path(killed, recipe.stem).exists()
    subprocess.run(cmd, check=True, capture_output=True)
    assert digest_tree(killed / archive.S2_DIR) == digest_tree(ref / archive.S2_DIR)
    assert not list(killed.rglob("*" + PARTIAL))


def test_cli_bad_product_fails_cleanly(synthetic, tmp_path):
    bad = tmp_path / synthetic.products[1].name  # a zip
    bad.write_bytes(synthetic.products[1].read_bytes()[:5000])
    good = synthetic.path_of(synthetic.find(level="L1C", baseline="02.05"))
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "ben_builder.cli", "patch", str(bad), str(good), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert bad.name in r.stderr and "not a readable zip" in r.stderr
    # the good product went through; nothing of the bad one was written
    assert (out / archive.S2_DIR / good.name.rsplit("_", 1)[0]).is_dir()
    assert not (out / archive.S2_DIR / bad.name.rsplit("_", 1)[0]).exists()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ben_builder.cli",
            "patch",
            str(bad),
            "--out",
            str(out),
            "--fail-fast",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "error:" in r.stderr


def test_v1_layout_writes_json_labels(synthetic, tmp_path):
    recipe = synthetic.find(level="L2A", baseline="02.05")
    process_product(
        synthetic.path_of(recipe), tmp_path, Options(clc_path=synthetic.clc, layout="v1")
    )
    folders = sorted((tmp_path / archive.V1_DIR).iterdir())
    assert folders and not (tmp_path / archive.S2_DIR).exists()
    import json

    f = folders[0]
    meta = json.loads((f / f"{f.name}_labels_metadata.json").read_text())
    assert set(meta) == {"labels", "coordinates", "projection", "tile_source", "acquisition_date"}
    assert meta["tile_source"] == recipe.name
    assert meta["acquisition_date"] == recipe.sensing.strftime("%Y-%m-%d %H:%M:%S")
    assert meta["labels"], "v1 labels come from the CLC"
    c = meta["coordinates"]
    assert c["lrx"] - c["ulx"] == 1200 and c["uly"] - c["lry"] == 1200
    assert f.name.startswith("S2B_MSIL2A_20170812T101021_")  # v1 names say MSIL2A
    with rasterio.open(f / f"{f.name}_B02.tif") as ds:
        assert ds.transform.c == c["ulx"] and ds.transform.f == c["uly"]


def test_a_patch_only_the_last_band_drops_leaves_no_files(synthetic, tmp_path, monkeypatch):
    """Band files are written while later bands decode; a patch a later band's no-data drops
    is removed again, so the archive equals one whose every band has that no-data."""
    import ben_builder.chain.product as process

    recipe = synthetic.find(level="L2A", baseline="04.00")
    product = synthetic.path_of(recipe)
    truth = pd.read_parquet(synthetic.root / "ground_truth" / f"{recipe.stem}.parquet")
    max_unlabeled = specs.nomenclature().max_unlabeled_fraction
    kept = truth.loc[~truth.has_nodata & (truth.unlabeled_fraction < max_unlabeled), "patch_id"]
    victim = sorted(kept)[3]
    x, y = (int(v) for v in victim.rsplit("_", 2)[1:])
    last = BANDS[-1]
    real_read = process.read_band

    def read_band(prod, band, res, window=None, hole_in=(last.name,)):
        arr = real_read(prod, band, res, window)
        if band in hole_in:
            k = 1200 // res
            arr = arr.copy()
            arr[y * k : (y + 1) * k, x * k : (x + 1) * k][: k // 2] = 0  # half the patch no-data
        return arr

    monkeypatch.setattr(process, "read_band", read_band)
    late = tmp_path / "late"
    s = process_product(product, late, Options(clc_path=synthetic.clc, layout="both"))
    assert s.dropped_nodata == truth.has_nodata.sum() + 1
    assert not (late / archive.S2_DIR / recipe.stem / victim).exists()
    assert not (late / archive.REFMAP_DIR / recipe.stem / victim).exists()
    v1_names = pd.read_parquet(archive.part_path(late, recipe.stem)).s2v1_name
    assert process.v1_name(process.open_product(product), x, y) not in set(v1_names)

    every = tmp_path / "every"  # the same hole in every band: dropped before any write
    monkeypatch.setattr(
        process, "read_band", lambda p, b, r, w=None: read_band(p, b, r, w, [b.name for b in BANDS])
    )
    process_product(product, every, Options(clc_path=synthetic.clc, layout="both"))
    for folder in (archive.S2_DIR, archive.REFMAP_DIR, archive.V1_DIR):
        assert digest_tree(late / folder) == digest_tree(every / folder)

    threaded = tmp_path / "threaded"  # bands decoded side by side, written as they finish
    monkeypatch.setattr(process, "read_band", read_band)
    process_product(product, threaded, Options(clc_path=synthetic.clc, layout="both"), threads=3)
    assert digest_tree(threaded) == digest_tree(late)
    assert sorted(p.name for p in (late / archive.V1_DIR).iterdir()) == sorted(v1_names)


def test_bad_clc_while_bands_decode_fails_in_label_and_stops_the_decoders(synthetic, tmp_path):
    """With several threads the bands decode while labels are made: a CLC error still surfaces
    as a ``label`` failure, the decoders are stopped, and no patch file or part is written."""
    import threading

    from ben_builder.chain.stages import stage_of
    from ben_builder.errors import ClcError

    product = synthetic.path_of(synthetic.find(level="L2A", baseline="04.00"))
    bad = tmp_path / "U2018_CLC2018_V2020_20u1.gpkg"
    bad.write_bytes(b"not a geopackage")
    out = tmp_path / "out"
    with pytest.raises(ClcError, match="gpkg: cannot open as a vector dataset") as info:
        process_product(product, out, Options(clc_path=bad), threads=2)
    assert stage_of(info.value) == "label"
    assert not [t for t in threading.enumerate() if t.name.startswith("ben-band-decoder")]
    assert not list(out.rglob("*.tif"))
    assert not list(out.rglob("*.parquet"))
