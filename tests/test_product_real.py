"""Real Sentinel-2 metadata as the reference: reader, verification and generator against it.

Products are built around the metadata of four real products (``tests/data/real-s2-metadata``:
L1C 02.09, L2A 02.12 by Esri with GeoTIFF bands, L2A 02.14, L2A 05.09); see
``tests/real_products.py`` for what is real and what is written here.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner

from ben_builder import archive, specs
from ben_builder.chain.product import Options, process_product
from ben_builder.cli import main
from ben_builder.errors import CorruptProductError, MissingBandError, UnsupportedProductError
from ben_builder.patches.grid import PatchGrid
from ben_builder.product.safe import IMAGE_FORMATS, open_product
from ben_builder.product.verify import verify_product
from ben_builder.sources.local import select_products
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.scene import render_band
from ben_builder.sources.synthetic.writer import image_files, scene_for, write_product
from tests.real_products import REAL_METADATA, RealMetadata, build, real_products

pytestmark = pytest.mark.real_data
BANDS = specs.bands().bands
REAL = {p.name.split("_")[1] + p.name.split("_")[3]: p for p in real_products()}
# keys: MSIL1CN0209, MSIL2AN0212 (Esri, GeoTIFF), MSIL2AN0214, MSIL2AN0509
SCALED_PX = 1260  # 10 x 10 patches and a dropped partial row/column
IDS = sorted(REAL)


def test_the_real_metadata_is_in_the_clone():
    """The four real products ship with the tests: no test of them may skip in a fresh clone."""
    assert sorted(REAL) == ["MSIL1CN0209", "MSIL2AN0212", "MSIL2AN0214", "MSIL2AN0509"], (
        REAL_METADATA
    )


def _real(key: str) -> Path:
    return REAL[key]


@pytest.fixture(scope="module")
def blank_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("blank")


# ------------------------------------------------------------------ full-size, real metadata


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize("key", IDS)
def test_full_size_product_opens_as_its_metadata_says(key, zipped, tmp_path, blank_cache):
    built = build(_real(key), tmp_path, zipped=zipped, blank_cache=blank_cache)
    meta = built.meta
    p = open_product(built.path)
    ext = IMAGE_FORMATS[meta.image_format]
    assert p.image_format == meta.image_format
    assert p.processing_baseline == f"{meta.name.baseline[:2]}.{meta.name.baseline[2:]}"
    assert p.quantification_value == 10000
    assert set(p.offsets.values()) == {meta.offset}
    # the tile as MTD_TL.xml gives it: EPSG, upper-left corner, 10980 px
    assert (p.tile.epsg, p.tile.ulx_m, p.tile.uly_m, p.tile.size_m) == (
        meta.geometry.epsg,
        meta.geometry.ulx_m,
        meta.geometry.uly_m,
        109800.0,
    )
    grid = PatchGrid(p.tile, 1200)
    assert grid.shape == (91, 91) and len(grid) == 8281
    last = grid.patch(90, 90)
    assert (last.ulx_m, last.uly_m) == (p.tile.ulx_m + 108000, p.tile.uly_m - 108000)
    # every band is the file at its native resolution, whatever else is listed
    for b in BANDS:
        path = p.band_paths[b.name]
        want = f"_{b.name}_{b.resolution_m}m{ext}" if p.level == "L2A" else f"_{b.name}{ext}"
        assert path.endswith(want), (b.name, path)
        assert (f"/R{b.resolution_m}m/" in path) == (p.level == "L2A")
        with rasterio.open(path) as ds:
            assert ds.width == ds.height == p.tile.size_px(b.resolution_m)
    if p.level == "L2A":
        assert p.band_paths["SCL"].endswith(f"_SCL_20m{ext}")
    v = verify_product(built.path)
    if key == "MSIL2AN0212":  # Esri's manifest lists every band at 744 bytes: a placeholder
        assert not v.manifest
    else:
        assert v.manifest and v.files_checked == len(built.written) + 2  # + real MTD_MSI, MTD_TL
        assert v.algorithms == (("SHA3-256",) if key == "MSIL2AN0509" else ("MD5",))
        assert v.absent  # QI reports, AUX data, HTML: not written here


def test_real_manifests_verify_the_real_metadata_files():
    """The real checksums (MD5 and SHA3-256) of the real MTD files, with nothing rewritten."""
    for key, src in REAL.items():
        v = verify_product(src)
        if key == "MSIL2AN0212":
            assert not v.manifest
        else:
            assert v.files_checked == 2  # MTD_MSIL*.xml and MTD_TL.xml, real bytes, real sums


# ------------------------------------------------------------ scaled tiles, pixels end to end


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize("key", IDS)
def test_real_metadata_products_cut_correctly(key, zipped, tmp_path):
    built = build(_real(key), tmp_path / "in", size_px=SCALED_PX, zipped=zipped)
    out = tmp_path / "archive"
    s = process_product(built.path, out)
    meta = built.meta
    stem = meta.name.stem
    assert s.candidates == 100
    assert (
        s.product_info["processing_baseline"]
        == f"{meta.name.baseline[:2]}.{meta.name.baseline[2:]}"
    )
    assert s.product_info["quantification_value"] == 10000
    assert s.product_info["image_format"] == meta.image_format
    offsets = s.product_info["radiometric_offset"]
    assert offsets == ({} if meta.offset == 0 else {b: meta.offset for b in offsets})
    if meta.offset:
        assert set(offsets) >= {b.name for b in BANDS}
    assert s.verification is not None
    assert s.verification["manifest"] == (key != "MSIL2AN0212")

    scene, acq, level = built.scene, built.acq, meta.name.level
    assert scene is not None and acq is not None
    grid = PatchGrid(built.geometry, 1200)
    full = {b.name: render_band(scene, acq, b.name, b.resolution_m, level) for b in BANDS}
    kept = sorted(p.name for p in (out / archive.S2_DIR / stem).iterdir())
    assert len(kept) == s.kept > 0
    for patch in grid:
        pid = patch.name(stem)
        if pid not in kept:
            continue
        for b in BANDS:
            with rasterio.open(out / archive.S2_DIR / stem / pid / f"{pid}_{b.name}.tif") as ds:
                assert ds.crs.to_epsg() == meta.geometry.epsg
                assert ds.transform == patch.transform(b.resolution_m)
                k = b.size_px
                want = full[b.name][
                    patch.y * k : (patch.y + 1) * k, patch.x * k : (patch.x + 1) * k
                ]
                np.testing.assert_array_equal(ds.read(1), want)  # offsets undone, as documented
    part = pd.read_parquet(archive.part_path(out, stem))
    assert sorted(part.patch_id) == kept


# ---------------------------------------------------------------------- corrupted inputs


def _flip(data: bytearray, at: int) -> None:
    for i in range(at, at + 16):
        data[i] ^= 0xFF


def test_flipped_bytes_in_a_folder_product_are_refused(tmp_path):
    built = build(_real("MSIL2AN0509"), tmp_path / "in", size_px=SCALED_PX)
    band = next(built.path.rglob("*_B03_10m.jp2"))
    data = bytearray(band.read_bytes())
    _flip(data, len(data) // 2)
    band.write_bytes(bytes(data))
    with pytest.raises(CorruptProductError, match="SHA3-256") as err:
        process_product(built.path, tmp_path / "archive")
    assert band.name in str(err.value) and built.path.name in str(err.value)
    assert not (tmp_path / "archive" / archive.S2_DIR).exists()
    # what the check prevents: GDAL decodes the damaged JP2 without an error (wrong pixels);
    # the switch turns the check off, and the product is cut
    s = process_product(built.path, tmp_path / "archive2", Options(verify=False))
    assert s.kept > 0 and s.verification is None


def test_flipped_bytes_in_a_zip_are_refused(tmp_path):
    built = build(_real("MSIL2AN0214"), tmp_path / "in", size_px=SCALED_PX, zipped=True)
    with zipfile.ZipFile(built.path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("_B11_20m.jp2"))
    data = bytearray(built.path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    _flip(data, start + info.compress_size - 200)  # near the end: GDAL may not even notice
    built.path.write_bytes(bytes(data))
    with pytest.raises(CorruptProductError, match="B11_20m.jp2") as err:
        verify_product(built.path)
    assert "MD5" in str(err.value) or "CRC" in str(err.value)
    with pytest.raises(CorruptProductError, match="B11_20m.jp2"):
        process_product(built.path, tmp_path / "archive")


def test_zip_crc_checked_for_files_outside_the_manifest(tmp_path):
    built = build(_real("MSIL2AN0212"), tmp_path / "in", size_px=SCALED_PX, zipped=True)
    with zipfile.ZipFile(built.path) as zf:  # Esri: placeholder manifest -> CRCs only
        info = next(i for i in zf.infolist() if i.filename.endswith("_B05_20m.tif"))
    data = bytearray(built.path.read_bytes())
    _flip(data, info.header_offset + 30 + len(info.filename) + len(info.extra) + 50)
    built.path.write_bytes(bytes(data))
    with pytest.raises(CorruptProductError, match="B05_20m.tif"):
        verify_product(built.path)


def test_verification_is_recorded_and_not_repeated(tmp_path, monkeypatch):
    built = build(_real("MSIL1CN0209"), tmp_path / "in", size_px=SCALED_PX)
    out = tmp_path / "archive"
    stem = built.meta.name.stem
    s = process_product(built.path, out)
    record = archive.part_path(out, stem).with_suffix(".verified.json")
    assert record.exists() and s.verification
    archive.part_path(out, stem).unlink()  # force the product to be processed again
    calls = []
    import ben_builder.product.verify as verify

    monkeypatch.setattr(verify, "verify_product", lambda p: calls.append(p))
    s2 = process_product(built.path, out)
    assert calls == [] and s2.verification == s.verification  # the record, not a new check


# ---------------------------------------------------------------------- reader errors


def test_missing_native_band_is_named(tmp_path):
    built = build(_real("MSIL2AN0509"), tmp_path / "in", size_px=SCALED_PX)
    next(built.path.rglob("*_B01_60m.jp2")).unlink()
    mtd = built.path / "MTD_MSIL2A.xml"
    mtd.write_text(re.sub(r"\s*<IMAGE_FILE>[^<]*_B01_60m</IMAGE_FILE>", "", mtd.read_text()))
    with pytest.raises(MissingBandError, match="B01 at its native 60 m") as err:
        open_product(built.path)
    assert "B01_20m" in str(err.value)  # what is listed instead


def test_unknown_image_format(tmp_path):
    built = build(_real("MSIL2AN0214"), tmp_path / "in", size_px=SCALED_PX)
    mtd = built.path / "MTD_MSIL2A.xml"
    mtd.write_text(mtd.read_text().replace('imageFormat="JPEG2000"', 'imageFormat="PNG"'))
    with pytest.raises(UnsupportedProductError, match="imageFormat 'PNG'"):
        open_product(built.path)


def test_metadata_file_found_case_insensitively(tmp_path):
    built = build(_real("MSIL1CN0209"), tmp_path / "in", size_px=SCALED_PX)
    (built.path / "MTD_MSIL1C.xml").rename(built.path / "mtd_msil1c.xml")
    tl = next(built.path.rglob("MTD_TL.xml"))
    tl.rename(tl.with_name("mtd_tl.xml"))
    p = open_product(built.path)
    assert p.tile.epsg == 32701


# ------------------------------------------------------------------ duplicate acquisitions


def test_reprocessed_duplicates_keep_the_latest(tmp_path):
    names = [
        "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE",
        "S2A_MSIL2A_20230821T221941_N0500_R029_T01KAB_20230821T235959.zip",
        "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.zip",
        "S2A_MSIL1C_20230821T221941_N0509_R029_T01KAB_20230822T000000.SAFE",
        "S2B_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE",
    ]
    kept, dropped = select_products([tmp_path / n for n in names])
    assert [p.name for p in kept] == sorted([names[2], names[3], names[4]])
    assert sorted(d.path.name for d in dropped) == sorted([names[0], names[1]])
    assert all(d.kept.name == names[2] for d in dropped)
    with pytest.raises(UnsupportedProductError, match="more than once"):
        select_products([tmp_path / n for n in names], "fail")


def test_cli_skips_the_older_of_two_generations(tmp_path):
    built = build(_real("MSIL2AN0509"), tmp_path / "a", size_px=SCALED_PX)
    newer = tmp_path / "a" / built.path.name.replace("20230822T021825", "20231101T000000")
    shutil.copytree(built.path, newer)
    out = tmp_path / "archive"
    res = CliRunner().invoke(main, ["patch", str(built.path), str(newer), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"skipped {built.path.name}" in res.output
    parts = sorted(p.name for p in (out / archive.PARTS_DIR).glob("*.json"))
    assert [p for p in parts if not p.endswith(".verified.json")] == [
        f"{built.meta.name.stem}.json"
    ]


# --------------------------------------------------------- no coverage, nothing produced


def test_run_without_clc_coverage_warns_and_fails(tmp_path, synthetic):
    built = build(_real("MSIL2AN0214"), tmp_path / "in", size_px=SCALED_PX)
    out = tmp_path / "archive"
    res = CliRunner().invoke(
        main, ["process", str(built.path), "--out", str(out), "--clc", str(synthetic.clc)]
    )
    assert res.exit_code == 1
    assert "no CLC polygon covers tile T22HBD" in res.output
    assert "no patch was produced" in res.output


# ------------------------------------------------------------- the generator is real-shaped


def _paths(root: ET.Element) -> list[str]:
    out: list[str] = []

    def walk(e: ET.Element, prefix: str) -> None:
        p = f"{prefix}/{e.tag.rsplit('}', 1)[-1]}"
        if p not in out:
            out.append(p)
        for c in e:
            walk(c, p)

    walk(root, "")
    return out


def _relative_files(files: list[str]) -> list[str]:
    """IMAGE_FILE entries without granule, tile and date: ``IMG_DATA/R20m/B01_20m``."""
    return [
        re.sub(r"^GRANULE/[^/]+/(IMG_DATA/(?:R\d\dm/)?)T\w{5}_\d{8}T\d{6}_", r"\1", f)
        for f in files
    ]


@pytest.mark.parametrize(
    "key,level,baseline",
    [
        ("MSIL2AN0509", "L2A", "05.09"),
        ("MSIL2AN0214", "L2A", "02.14"),
        ("MSIL1CN0209", "L1C", "02.09"),
    ],
)
def test_generator_lists_the_real_image_files(key, level, baseline):
    real = RealMetadata.read(_real(key))
    r = ProductRecipe("T33UUP", level, baseline, datetime(2023, 8, 21, 10, 0, 0))
    ours = [f.rel for f in image_files(r)]
    assert len(ours) == len(real.image_files) == {"L1C": 14, "L2A": 36 if r.offset else 35}[level]
    by_folder = {}
    for name in _relative_files(real.image_files):
        by_folder.setdefault(name.rsplit("/", 1)[0], []).append(name)
    ours_by_folder = {}
    for name in _relative_files(ours):
        ours_by_folder.setdefault(name.rsplit("/", 1)[0], []).append(name)
    assert {k: sorted(v) for k, v in ours_by_folder.items()} == {
        k: sorted(v) for k, v in by_folder.items()
    }


@pytest.mark.parametrize(
    "key,level,baseline", [("MSIL2AN0509", "L2A", "05.09"), ("MSIL1CN0209", "L1C", "02.09")]
)
def test_generator_metadata_has_the_real_structure(tmp_path, key, level, baseline):
    r = ProductRecipe("T33UUP", level, baseline, datetime(2023, 8, 21, 10, 0, 0))
    safe = write_product(r, scene_for("T33UUP", 1260, 0), tmp_path)
    real_src = _real(key)
    for rel in (f"MTD_MSI{level}.xml", "GRANULE/*/MTD_TL.xml"):
        ours = ET.parse(next(safe.glob(rel))).getroot()
        real = ET.parse(next(real_src.glob(rel))).getroot()
        assert ours.tag == real.tag  # namespace and root element
        real_paths = _paths(real)
        ours_paths = _paths(ours)
        assert set(ours_paths) <= set(real_paths), set(ours_paths) - set(real_paths)
        # in the real order
        assert ours_paths == [p for p in real_paths if p in set(ours_paths)]
    manifest = ET.parse(safe / "manifest.safe").getroot()
    real_manifest = ET.parse(real_src / "manifest.safe").getroot()
    assert manifest.tag == real_manifest.tag
    assert verify_product(safe).files_checked == sum(1 for p in safe.rglob("*") if p.is_file()) - 1


def test_generator_geotiff_products_read_like_jp2(tmp_path):
    scene = scene_for("T33UUP", 1260, 0)
    kw = dict(
        tile_id="T33UUP", level="L2A", baseline="04.00", sensing=datetime(2019, 2, 12, 10, 0, 0)
    )
    tif = write_product(ProductRecipe(**kw, image_format="GeoTIFF"), scene, tmp_path / "t")
    jp2 = write_product(ProductRecipe(**kw), scene, tmp_path / "j")
    assert len(list(tif.rglob("IMG_DATA/*/*.tif"))) == 36
    assert not list(tif.rglob("IMG_DATA/*/*.jp2"))
    a, b = open_product(tif), open_product(jp2)
    from ben_builder.product.safe import read_band

    for band, res in (("B02", 10), ("B8A", 20), ("B09", 60)):
        np.testing.assert_array_equal(read_band(a, band, res), read_band(b, band, res))
