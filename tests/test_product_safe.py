import os
import shutil
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio

from ben_builder.errors import (
    BandShapeError,
    BenBuilderError,
    CorruptProductError,
    MetadataError,
    MissingBandError,
    ProductNotFoundError,
    UnsafeArchiveError,
    UnsupportedProductError,
)
from ben_builder.product.names import ProductName
from ben_builder.product.safe import harmonize, open_product, read_band
from ben_builder.sources.synthetic.scene import render_band


def test_product_name_parsing():
    n = ProductName.parse("S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_20170613T101608.SAFE")
    assert n.stem == "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
    assert (n.mission, n.level, n.baseline, n.relative_orbit, n.tile_id) == (
        "S2A",
        "L2A",
        "9999",
        22,
        "T33UUP",
    )
    assert n.sensing_time == datetime(2017, 6, 13, 10, 10, 31)
    assert ProductName.parse(n.name + ".zip") == n
    with pytest.raises(UnsupportedProductError, match="not a Sentinel-2"):
        ProductName.parse("S2A_OPER_PRD_MSIL1C_PDMC_20160101T000000_R022_V2016.SAFE")
    with pytest.raises(UnsupportedProductError):
        ProductName.parse("S2A_MSIL3A_20170613T101031_N9999_R022_T33UUP_20170613T101608")


def test_harmonize_keeps_nodata_and_clips_to_one():
    dn = np.array([0, 1, 999, 1000, 1001, 5000], np.uint16)
    np.testing.assert_array_equal(harmonize(dn, -1000), [0, 1, 1, 1, 1, 4000])
    assert harmonize(dn, 0) is dn


def test_harmonize_in_place_equals_a_copy_across_its_row_steps():
    from ben_builder.product.safe import HARMONIZE_ROWS

    rng = np.random.default_rng(3)
    dn = rng.integers(0, 3000, (2 * HARMONIZE_ROWS + 7, 33), dtype=np.uint16)
    dn[::5, ::3] = 0
    kept = dn.copy()
    expected = np.where(dn == 0, 0, np.maximum(dn.astype(np.int32) - 1000, 1)).astype(np.uint16)
    copy = harmonize(dn, -1000)
    np.testing.assert_array_equal(copy, expected)
    np.testing.assert_array_equal(dn, kept)  # not in place: the input is untouched
    same = harmonize(dn, -1000, in_place=True)
    assert same is dn
    np.testing.assert_array_equal(dn, expected)
    view = kept[:, ::2]  # not contiguous: harmonized into a copy even when asked in place
    np.testing.assert_array_equal(harmonize(view, -1000, in_place=True), expected[:, ::2])
    np.testing.assert_array_equal(view, kept[:, ::2])


def test_open_every_demo_product(synthetic):
    for recipe, path in zip(synthetic.recipes, synthetic.products, strict=True):
        p = open_product(path)
        assert p.level == recipe.level
        assert p.processing_baseline == recipe.baseline
        assert p.offsets["B02"] == recipe.offset
        assert p.tile.size_m == 12600 and p.tile.epsg in (32633, 32634)
        assert set(p.band_paths) >= {"B01", "B02", "B8A", "B12"}
        assert ("SCL" in p.band_paths) == (recipe.level == "L2A")
        if recipe.zipped:
            assert p.band_paths["B02"].startswith("/vsizip/")
        if recipe.level == "L1C":
            assert set(p.mask_paths) == {"MSK_CLASSI" if recipe.offset else "MSK_CLOUDS"}


@pytest.mark.parametrize(
    "level,baseline", [("L2A", "04.00"), ("L2A", "02.05"), ("L1C", "02.05"), ("L1C", "04.00")]
)
@pytest.mark.parametrize("opj_threads", [None, "0", "2"])
def test_read_band_matches_generator_after_offset(
    synthetic, level, baseline, opj_threads, monkeypatch
):
    """Every band as generated, whichever OpenJPEG threading decodes it.

    ``None``: GDAL gives each JP2 codec ``GDAL_NUM_THREADS`` OpenJPEG threads (a pool of one);
    ``"0"``: OpenJPEG decodes in the calling thread, as the chain's processes do; ``"2"``: a
    pool of two OpenJPEG threads, as a band with more cores than one gets.
    """
    if opj_threads is None:
        monkeypatch.delenv("OPJ_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OPJ_NUM_THREADS", opj_threads)
    recipe = synthetic.find(level=level, baseline=baseline)
    p = open_product(synthetic.path_of(recipe))
    scene = synthetic.scene(recipe)
    acq = recipe.acquisition(scene)
    with rasterio.Env(GDAL_NUM_THREADS=1):
        for band, res in (("B04", 10), ("B11", 20), ("B09", 60)):
            np.testing.assert_array_equal(
                read_band(p, band, res), render_band(scene, acq, band, res, level)
            )


# ---------------------------------------------------------------- bad input


@pytest.fixture
def safe_copy(synthetic, tmp_path):
    recipe = synthetic.find(level="L2A", baseline="04.00")
    src = synthetic.path_of(recipe)
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def zip_copy(synthetic, tmp_path):
    recipe = synthetic.find(level="L2A", baseline="02.05")
    src = synthetic.path_of(recipe)
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    return dst


def test_missing_product(tmp_path):
    with pytest.raises(ProductNotFoundError, match="no such product"):
        open_product(tmp_path / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_20170613T101608.SAFE")


def test_truncated_zip(zip_copy):
    data = zip_copy.read_bytes()
    zip_copy.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptProductError, match="not a readable zip") as err:
        open_product(zip_copy)
    assert zip_copy.name in str(err.value)


def test_corrupt_band_data_in_zip(zip_copy):
    with zipfile.ZipFile(zip_copy) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("_B03_10m.jp2"))
    data = bytearray(zip_copy.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[start : start + 4000] = b"\x00" * 4000
    zip_copy.write_bytes(bytes(data))
    p = open_product(zip_copy)
    with pytest.raises(CorruptProductError, match="B03"):
        read_band(p, "B03", 10)


def test_zip_with_path_traversal(tmp_path, zip_copy):
    evil = tmp_path / "evil" / zip_copy.name
    evil.parent.mkdir()
    with zipfile.ZipFile(zip_copy) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist()[:3]:
            dst.writestr(info, src.read(info))
        dst.writestr("S2B_x.SAFE/../../../../tmp/owned.txt", b"x")
    with pytest.raises(UnsafeArchiveError, match="outside the product") as err:
        open_product(evil)
    assert str(evil) in str(err.value)


def test_zip_without_safe_folder(tmp_path, zip_copy):
    other = tmp_path / "other" / zip_copy.name
    other.parent.mkdir()
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", b"hello")
    with pytest.raises(ProductNotFoundError, match="exactly one top-level"):
        open_product(other)


def test_missing_band_file(safe_copy):
    next(safe_copy.rglob("*_B8A_20m.jp2")).unlink()
    with pytest.raises(MissingBandError, match="B8A") as err:
        open_product(safe_copy)
    assert safe_copy.name in str(err.value)


def test_band_of_wrong_size(safe_copy):
    target = next(safe_copy.rglob("*_B03_10m.jp2"))
    with rasterio.open(
        target,
        "w",
        driver="JP2OpenJPEG",
        width=600,
        height=600,
        count=1,
        dtype="uint16",
        QUALITY="100",
        REVERSIBLE="YES",
    ) as ds:
        ds.write(np.ones((1, 600, 600), np.uint16))
    p = open_product(safe_copy)
    with pytest.raises(BandShapeError, match="600 x 600") as err:
        read_band(p, "B03", 10)
    assert "B03" in str(err.value)


def test_hostile_xml_entity_expansion(safe_copy):
    mtd = safe_copy / "MTD_MSIL2A.xml"
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
    )
    mtd.write_text(bomb + mtd.read_text().split("\n", 1)[1].replace("Level-2A<", "&lol3;<", 1))
    with pytest.raises(MetadataError, match="forbidden XML") as err:
        open_product(safe_copy)
    assert "MTD_MSIL2A.xml" in str(err.value)


def test_malformed_xml(safe_copy):
    tl = next(safe_copy.rglob("MTD_TL.xml"))
    tl.write_text(tl.read_text()[:300])
    with pytest.raises(MetadataError, match="not well-formed") as err:
        open_product(safe_copy)
    assert "MTD_TL.xml" in str(err.value)


def test_xml_missing_geoposition(safe_copy):
    tl = next(safe_copy.rglob("MTD_TL.xml"))
    tl.write_text(
        tl.read_text().replace('Geoposition resolution="10"', 'Geoposition resolution="11"')
    )
    with pytest.raises(MetadataError, match="Geoposition"):
        open_product(safe_copy)


def test_unknown_product_type(safe_copy):
    mtd = safe_copy / "MTD_MSIL2A.xml"
    mtd.write_text(mtd.read_text().replace("<PRODUCT_TYPE>S2MSI2A<", "<PRODUCT_TYPE>S2MSI2Ap<"))
    with pytest.raises(UnsupportedProductError, match="S2MSI2Ap"):
        open_product(safe_copy)


def test_errors_share_root_and_builtin():
    assert issubclass(MissingBandError, BenBuilderError)
    assert issubclass(MissingBandError, FileNotFoundError)
    assert issubclass(CorruptProductError, ValueError)


def test_not_a_product_folder(tmp_path):
    d = tmp_path / "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_20170613T101608.SAFE"
    d.mkdir()
    with pytest.raises(MetadataError, match="MTD_MSIL2A.xml not found"):
        open_product(d)


def test_unused_path_argument_types(safe_copy):
    assert open_product(str(safe_copy)).path == Path(safe_copy)


# ------------------------------------------------------ products say who they are, bounded reads


def test_a_product_whose_metadata_contradicts_its_name_is_refused(safe_copy, synthetic):
    """Named after one tile (or orbit, or time), described in its metadata as another."""
    name = ProductName.parse(safe_copy.name)
    for field, swap in (
        ("tile", lambda n: n.replace(f"_{name.tile_id}_", "_T34VER_")),
        ("relative orbit", lambda n: n.replace(f"_R{name.relative_orbit:03d}_", "_R099_")),
        ("sensing time", lambda n: n.replace("T101031_", "T101032_", 1)),
        ("mission", lambda n: "S2B" + n[3:]),
    ):
        renamed = safe_copy.parent / swap(safe_copy.name)
        safe_copy.rename(renamed)
        with pytest.raises(MetadataError, match=f"the name says {field} ") as err:
            open_product(renamed)
        assert "says" in str(err.value).split(f"the name says {field} ", 1)[1]
        renamed.rename(safe_copy)
    open_product(safe_copy)  # under its own name it opens


def test_a_zip_named_after_another_product_is_refused(zip_copy):
    for other in (
        zip_copy.name.replace("_T33UUP_", "_T34VER_"),  # another tile
        zip_copy.name.replace(".zip", "(1).zip"),  # a browser's second download
    ):
        copy = zip_copy.parent / other
        shutil.copy(zip_copy, copy)
        with pytest.raises(MetadataError, match="the file name says .* the product inside is"):
            open_product(copy)
    assert open_product(zip_copy).name.name == zip_copy.name.removesuffix(".zip")


def test_metadata_above_the_size_cap_is_not_parsed(safe_copy, zip_copy, tmp_path):
    from ben_builder.product import source

    mtd = safe_copy / "MTD_MSIL2A.xml"
    text = mtd.read_text()
    mtd.write_text(text.replace("</", " " * (source.MAX_XML_BYTES + 1) + "</", 1))
    with pytest.raises(MetadataError, match=r"MTD_MSIL2A.xml is [\d.]+ MB.*refusing to parse"):
        open_product(safe_copy)
    # in a zip: ~9 MB of blanks compress to a few kB, a billion-laughs-like inflation
    big = tmp_path / "big" / zip_copy.name
    big.parent.mkdir()
    with zipfile.ZipFile(zip_copy) as zin, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("MTD_TL.xml"):
                data = data.replace(b"</", b" " * (source.MAX_XML_BYTES + 1) + b"</", 1)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    assert big.stat().st_size < zip_copy.stat().st_size + 200_000
    with pytest.raises(MetadataError, match="MTD_TL.xml is .* MB"):
        open_product(big)


def test_links_leading_out_of_a_product_are_refused(safe_copy, tmp_path):
    from ben_builder.product.verify import checksum, stat_fingerprint

    band = next(safe_copy.rglob("*_B02_10m.jp2"))
    band.unlink()
    band.symlink_to("/proc/self/pagemap")  # reading it would never end
    for read in (open_product, checksum, stat_fingerprint):
        with pytest.raises(UnsafeArchiveError, match="outside the product"):
            read(safe_copy)
    # a link that stays inside the product is fine, a FIFO is not
    band.unlink()
    other = next(safe_copy.rglob("*_B03_10m.jp2"))
    band.symlink_to(other)
    checksum(safe_copy)
    band.unlink()
    os.mkfifo(band)
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        checksum(safe_copy)
