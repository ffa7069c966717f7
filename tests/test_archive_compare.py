"""`ben-builder compare`: a planted difference of each kind is found, an identical copy passes."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from click.testing import CliRunner

from ben_builder import archive
from ben_builder.archive.compare import compare_archives
from ben_builder.archive.finalize import finalize
from ben_builder.chain.product import Options, process_product
from ben_builder.cli import main
from ben_builder.files import write_parquet


@pytest.fixture(scope="module")
def built(synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    for r in synthetic.recipes:
        if r.level == "L2A" and r.tile_id == "T33UUP":
            process_product(synthetic.path_of(r), root, Options(clc_path=synthetic.clc))
    finalize(root)
    return root


def _release(built, path):
    """What a published release holds: the folders and the two parquets (no _parts/, report/)."""
    for name in (archive.S2_DIR, archive.REFMAP_DIR):
        shutil.copytree(built / name, path / name)
    for name in (archive.METADATA, archive.FLAGGED):
        shutil.copy(built / name, path / name)
    return path


def test_identical_copy_passes(built, tmp_path):
    ref = _release(built, tmp_path / "ref")
    c = compare_archives(built, ref)
    assert c.identical and c.patches_built == c.patches_reference > 0
    assert c.files["bands"].compared == 12 * c.patches_built
    assert c.files["reference maps"].compared == c.patches_built
    result = CliRunner().invoke(
        main, ["compare", str(built), "--reference", str(ref), "--report", str(tmp_path / "c.md")]
    )
    assert result.exit_code == 0, result.output
    assert "**IDENTICAL**" in (tmp_path / "c.md").read_text()


def test_planted_differences_are_each_found(built, tmp_path):
    ref = _release(built, tmp_path / "ref")
    meta = pd.read_parquet(ref / archive.METADATA)
    flagged = pd.read_parquet(ref / archive.FLAGGED)
    ids = sorted(meta.patch_id)
    dropped, relabelled, moved, recountried, repixelled, remapped = ids[:6]
    meta = meta[meta.patch_id != dropped]  # only in the built archive
    extra = meta.iloc[:1].assign(patch_id="S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99")
    meta = pd.concat([meta, extra])  # only in the reference
    i = meta.index[meta.patch_id == relabelled][0]
    meta.at[i, "labels"] = ["Urban fabric", "Arable land"]  # another set, not sorted
    meta.loc[meta.patch_id == recountried, "country"] = "Belgium"
    row = meta[meta.patch_id == moved].assign(contains_cloud_or_shadow=True)
    meta = meta[meta.patch_id != moved]  # into the other parquet
    flagged = pd.concat([flagged, row])
    write_parquet(ref / archive.METADATA, meta, schema=archive.METADATA_SCHEMA)
    write_parquet(ref / archive.FLAGGED, flagged, schema=archive.METADATA_SCHEMA)
    # a large_string column, as the project wrote before (concatenation with the release fails)
    table = pq.read_table(ref / archive.FLAGGED)
    table = table.set_column(0, "patch_id", table.column("patch_id").cast(pa.large_string()))
    pq.write_table(table, ref / archive.FLAGGED)
    product = repixelled.rsplit("_", 2)[0]
    band = archive.patch_dir(ref, product, repixelled) / f"{repixelled}_B05.tif"
    with rasterio.open(band, "r+") as ds:
        px = ds.read(1)
        px[3, 4] += 1
        ds.write(px, 1)
    refmap = archive.refmap_path(ref, product, remapped)
    with rasterio.open(refmap, "r+") as ds:
        px = ds.read(1)
        px[0, 0] = 999
        ds.write(px, 1)

    c = compare_archives(built, ref)
    assert not c.identical
    assert c.only_built == [dropped]
    assert c.only_reference == ["S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99"]
    assert c.schema == {f"{archive.FLAGGED}: patch_id": "string vs large_string"}
    assert c.columns["labels"].differ == 1 and relabelled in c.columns["labels"].examples[0]
    assert c.columns["country"].differ == 1 and recountried in c.columns["country"].examples[0]
    assert c.columns["parquet"].differ == 1 and moved in c.columns["parquet"].examples[0]
    assert c.columns["contains_cloud_or_shadow"].differ == 1
    assert c.columns["split"].differ == 0 and c.columns["s2v1_name"].differ == 0
    assert c.files["bands"].differ == 1
    assert c.files["bands"].examples == [f"{repixelled}_B05.tif: 1 pixels differ"]
    assert c.files["reference maps"].differ == 1

    result = CliRunner().invoke(
        main, ["compare", str(built), "--reference", str(ref), "--report", str(tmp_path / "c.md")]
    )
    assert result.exit_code == 1
    assert "DIFFERENT" in result.output and "labels (1 of" in result.output
    report = (tmp_path / "c.md").read_text()
    assert "**DIFFERENT**" in report and dropped in report and "large_string" in report


def test_missing_metadata_is_a_clear_error(built, tmp_path):
    result = CliRunner().invoke(main, ["compare", str(built), "--reference", str(tmp_path)])
    assert result.exit_code == 2
    assert "metadata.parquet: not found" in result.output


def test_the_s1_half_is_compared_pixel_by_pixel(tmp_path):
    """Pairs placed by the S1 stage: a changed pixel and a missing file are each a difference."""
    from datetime import datetime

    import rasterio

    from ben_builder.archive.finalize import finalize
    from ben_builder.chain.s1 import attach_s1
    from ben_builder.sources.synthetic.products import ProductRecipe
    from ben_builder.sources.synthetic.s1 import s1_patches
    from ben_builder.sources.synthetic.writer import scene_for, write_dataset

    vnj = ProductRecipe(
        "T35VNJ", "L2A", "02.06", datetime(2018, 2, 4, 9, 41, 59), mission="S2B", relative_orbit=36
    )
    with rasterio.Env():
        source = write_dataset([vnj], tmp_path / "inputs", size_px=1260, seed=0, s1=True).s1
    scene = scene_for("T35VNJ", 1260, 0)
    g = scene.geometry
    frame = pd.DataFrame(
        [
            {
                "patch_id": f"{vnj.stem}_{p.x:02d}_{p.y:02d}",
                "labels": ["Arable land"],
                "split": "train",
                "country": "Finland",
                "s1_name": p.s1_name,
                "s2v1_name": p.s2v1_name,
                "contains_seasonal_snow": False,
                "contains_cloud_or_shadow": False,
                "epsg": g.epsg,
                "ulx_m": g.ulx_m + 1200 * p.x,
                "uly_m": g.uly_m - 1200 * p.y,
            }
            for p in s1_patches(vnj, scene)
        ]
    )
    built, reference = tmp_path / "built", tmp_path / "reference"
    for root in (built, reference):
        finalize(root, frame.copy())
        assert not attach_s1(root, frame, source).failures
    assert compare_archives(built, reference).identical
    a, b = frame["s1_name"].iloc[:2]
    with rasterio.open(archive.s1_patch_dir(reference, a) / f"{a}_VH.tif") as ds:
        values, profile = ds.read(1), ds.profile
    values[5, 7] += 1.0
    changed = archive.s1_patch_dir(reference, a) / f"{a}_VH.tif"
    changed.unlink()  # a hard link to the source: write a new file, not through the link
    with rasterio.open(changed, "w", **profile) as ds:
        ds.write(values, 1)
    (archive.s1_patch_dir(reference, b) / f"{b}_VV.tif").unlink()
    c = compare_archives(built, reference)
    assert not c.identical
    assert c.files["S1"].differ == 2 and c.files["S1"].compared == 2 * len(frame)
    assert any("1 pixels differ" in e for e in c.files["S1"].examples)
    assert any("missing in reference" in e for e in c.files["S1"].examples)
