"""STAC items into product records: real items, and each harmonisation case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ben_builder.errors import MetadataError, UnsupportedProductError
from ben_builder.product.reader import open_product, read_cloud_cover
from ben_builder.product.safe import product_info
from ben_builder.product.stac import ITEM_BANDS, open_item

DATA = Path(__file__).resolve().parent / "data"
ITEMS = DATA / "real-stac-items"
EARTH_SEARCH = ITEMS / "S2A_28QCH_20200714_0_L2A.json"
PLANETARY = ITEMS / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
MTD_0509 = (
    DATA
    / "real-s2-metadata"
    / "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE"
    / "MTD_MSIL2A.xml"
)
pytestmark = pytest.mark.real_data


def _edited(src: Path, tmp_path: Path, edit) -> Path:
    item = json.loads(src.read_text())
    edit(item)
    out = tmp_path / src.name
    out.write_text(json.dumps(item))
    return out


def test_a_planetary_computer_item_is_the_product_it_names():
    p = open_product(PLANETARY)
    assert p.name.name == "S2B_MSIL2A_20190629T212529_N0212_R043_T06VVN_20201006T080531"
    assert (p.level, p.processing_baseline, p.quantification_value) == ("L2A", "02.12", 10000)
    assert p.offset_rule == "before-04.00" and set(p.offsets.values()) == {0}
    assert sorted(p.band_paths) == sorted(ITEM_BANDS)
    b02 = p.band_paths["B02"]
    assert b02.startswith("/vsicurl/https://sentinel2l2a01.blob.core.windows.net/")
    assert b02.endswith("/IMG_DATA/R10m/T06VVN_20190629T212529_B02_10m.tif")
    assert p.band_paths["SCL"].endswith("_SCL_20m.tif")
    assert (p.tile.epsg, p.tile.ulx_m, p.tile.uly_m, p.tile.size_m) == (
        32606,
        399960.0,
        6800040.0,
        109800.0,
    )
    assert product_info(p)["offset_rule"] == "before-04.00"
    assert (
        read_cloud_cover(PLANETARY)
        == json.loads(PLANETARY.read_text())["properties"]["eo:cloud_cover"]
    )


def test_an_earth_search_item_names_its_product_in_sentinel_product_id():
    p = open_item(EARTH_SEARCH)
    assert p.name.name == "S2A_MSIL2A_20200714T115221_N0214_R123_T28QCH_20200714T191310"
    assert p.processing_baseline == "02.14" and p.offset_rule == "before-04.00"
    assert p.band_paths["B8A"] == (
        "/vsicurl/https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/2020/"
        "S2A_28QCH_20200714_0_L2A/B8A.tif"
    )
    assert (p.tile.epsg, p.tile.ulx_m, p.tile.uly_m, p.tile.size_m) == (
        32628,
        300000.0,
        2300040.0,
        109800.0,
    )


def test_an_offset_declared_in_raster_bands_is_taken(tmp_path):
    """Earth Search's c1 collection: DNs as produced, scale 0.0001 and offset -0.1 declared."""

    def c1(item):
        item["properties"]["sentinel:product_id"] = (
            "S2A_MSIL2A_20200714T115221_N0509_R123_T28QCH_20230301T000000"
        )
        for key, asset in item["assets"].items():
            if key.startswith("B"):
                asset["raster:bands"] = [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]

    p = open_item(_edited(EARTH_SEARCH, tmp_path, c1))
    assert p.offset_rule == "declared" and p.processing_baseline == "05.09"
    assert {b: v for b, v in p.offsets.items() if b != "B10"} == dict.fromkeys(
        [b for b in p.offsets if b != "B10"], -1000
    )
    assert p.quantification_value == 10000


def test_an_offset_only_in_the_products_mtd_is_read_from_it(tmp_path):
    """Planetary Computer: baseline 05.09, the real MTD_MSIL2A.xml of such a product linked."""

    def pc_0509(item):
        item["properties"]["s2:processing_baseline"] = "05.09"
        item["properties"]["s2:product_uri"] = (
            "S2B_MSIL2A_20190629T212529_N0509_R043_T06VVN_20230101T000000.SAFE"
        )
        item["assets"]["product-metadata"]["href"] = str(MTD_0509)

    p = open_item(_edited(PLANETARY, tmp_path, pc_0509))
    assert p.offset_rule == "MTD" and set(p.offsets.values()) == {-1000}
    assert product_info(p)["radiometric_offset"]["B02"] == -1000


def test_an_offset_that_cannot_be_determined_is_refused(tmp_path):
    def no_mtd(item):
        item["properties"]["s2:processing_baseline"] = "05.09"
        item["properties"]["s2:product_uri"] = (
            "S2B_MSIL2A_20190629T212529_N0509_R043_T06VVN_20230101T000000.SAFE"
        )
        del item["assets"]["product-metadata"]

    with pytest.raises(UnsupportedProductError, match="refusing to guess"):
        open_item(_edited(PLANETARY, tmp_path, no_mtd))

    def flagged_only(item):  # Earth Search's flag, wrong for some items: not trusted
        item["properties"]["sentinel:product_id"] = (
            "S2A_MSIL2A_20220714T115221_N0400_R123_T28QCH_20220714T191310"
        )
        item["properties"]["earthsearch:boa_offset_applied"] = True

    with pytest.raises(UnsupportedProductError, match="baseline 04.00"):
        open_item(_edited(EARTH_SEARCH, tmp_path, flagged_only))


def test_items_without_what_a_product_needs_are_refused(tmp_path):
    def no_scl(item):
        del item["assets"]["SCL"]

    with pytest.raises(MetadataError, match="no asset for SCL"):
        open_item(_edited(EARTH_SEARCH, tmp_path, no_scl))

    def no_name(item):
        del item["properties"]["sentinel:product_id"]

    with pytest.raises(MetadataError, match="names no product"):
        open_item(_edited(EARTH_SEARCH, tmp_path, no_name))
    collection = ITEMS / "sentinel-2-l2a.collection.json"
    with pytest.raises(MetadataError, match="not a STAC item"):
        open_item(collection)
