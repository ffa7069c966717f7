"""Sentinel-2 tiles on Earth: a tile's geometry from its MGRS 100 km square.

A Sentinel-2 tile's upper-left corner is its MGRS 100 km square's upper-left corner snapped to
the 60 m grid (easting rounded down, true northing rounded up; south of the equator the northing
counts from the equator, not from the false northing). The tile is 109,800 m square, so it
overlaps its east and south neighbours of the same zone by 9,800 m. The rule gives the
``Geoposition`` of the real products' ``MTD_TL.xml`` (tested on the real metadata in
``tests/data``). The 100 km square itself comes from the ``mgrs`` package (GeoTrans' MGRS code).
"""

from __future__ import annotations

import math
import warnings

from ben_builder.errors import SpecError
from ben_builder.patches.grid import TileGeometry
from ben_builder.specs import check_tile_id

#: Side of a Sentinel-2 tile.
TILE_SIZE_M = 109_800.0
#: Side of an MGRS grid square; a tile's own square is the first 100 km east and south of its
#: corner, where no other tile of its zone reaches.
SQUARE_M = 100_000
#: The grid tile corners snap to (the 60 m bands' pixels).
SNAP_M = 60
#: False northing of the southern hemisphere's UTM zones.
SOUTH_FALSE_NORTHING_M = 10_000_000


def tile_geometry(tile_id: str) -> TileGeometry:
    """The geometry of any Sentinel-2 tile (the one its products' ``MTD_TL.xml`` states).

    Raises:
        SpecError: ``tile_id`` is not a valid tile id, or names no square of its zone.
    """
    import mgrs

    check_tile_id(tile_id)
    with warnings.catch_warnings():  # the library warns about the latitude of a square's corner
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            zone, hemisphere, east, north = mgrs.MGRS().MGRSToUTM(tile_id[1:] + "0" * 10)
        except Exception as exc:  # the library raises MGRSError, a plain Exception
            raise SpecError(f"{tile_id}: not a 100 km square of its zone ({exc})") from exc
    south = hemisphere == "S"
    west, south_edge = (
        math.floor(east),
        math.floor(north),
    )  # the library gives the 1 m cell's centre
    top = south_edge + SQUARE_M - (SOUTH_FALSE_NORTHING_M if south else 0)
    ulx = math.floor(west / SNAP_M) * SNAP_M
    uly = math.ceil(top / SNAP_M) * SNAP_M + (SOUTH_FALSE_NORTHING_M if south else 0)
    epsg = (32700 if south else 32600) + int(zone)
    return TileGeometry(epsg=epsg, ulx_m=float(ulx), uly_m=float(uly), size_m=TILE_SIZE_M)
