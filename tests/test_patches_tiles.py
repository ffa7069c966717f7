"""Tile geometry from the MGRS rule, checked against the Geoposition of real products."""

from __future__ import annotations

import re

import pytest

from ben_builder.errors import SpecError
from ben_builder.patches.tiles import tile_geometry
from ben_builder.specs import check_tile_id
from tests.real_products import real_products


@pytest.mark.real_data
def test_the_rule_gives_every_real_products_geoposition():
    products = real_products()
    assert len(products) == 4  # both hemispheres, x and y snapped and exact
    for product in products:
        mtd_tl = next(product.glob("GRANULE/*/MTD_TL.xml")).read_text()
        geo = re.search(
            r'<Geoposition resolution="10">\s*<ULX>(\d+)</ULX>\s*<ULY>(\d+)</ULY>', mtd_tl
        )
        epsg = re.search(r"<HORIZONTAL_CS_CODE>EPSG:(\d+)</HORIZONTAL_CS_CODE>", mtd_tl)
        assert geo and epsg, product.name
        tile = tile_geometry(product.name.split("_")[5])
        assert (tile.epsg, tile.ulx_m, tile.uly_m) == (int(epsg[1]), float(geo[1]), float(geo[2]))
        assert tile.size_m == 109_800


def test_published_corners_and_neighbours_overlap_by_about_9800_m():
    # T33UUP as DESIGN.md states it; T34VER starts at x = 499,980, not 500,000
    assert (tile_geometry("T33UUP").ulx_m, tile_geometry("T33UUP").uly_m) == (300_000, 5_400_000)
    assert tile_geometry("T34VER").ulx_m == 499_980
    west, east = tile_geometry("T33UUP"), tile_geometry("T33UVP")
    north, south = tile_geometry("T33UUQ"), west
    # 9,800 m, give or take the 60 m step a snapped corner moved by
    assert abs(west.ulx_m + west.size_m - east.ulx_m - 9_800) < 60
    assert abs(south.uly_m - (north.uly_m - north.size_m) - 9_800) < 60


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("30TVK", "did you mean T30TVK"),
        ("t30tvk", "did you mean T30TVK"),
        ("T30TVKX", ""),
        ("T61UUP", ""),
        ("T33IUP", ""),
        ("T33UUW", ""),
    ],
)
def test_tile_ids_are_checked_with_a_hint(bad, hint):
    with pytest.raises(SpecError, match="is not a Sentinel-2 tile id") as err:
        check_tile_id(bad)
    assert hint in str(err.value)
    with pytest.raises(SpecError):
        tile_geometry(bad)
