"""No ground twice: which tile keeps each place where the tiles of an archive overlap.

Neighbouring Sentinel-2 tiles overlap: a tile is 109,800 m square on a 100 km MGRS square, so it
reaches about 9,800 m into its east and south neighbours of the same zone, and tiles of
neighbouring zones overlap irregularly. Cut as they are, the same ground is in two tiles'
patches, and the two copies can land in different splits.

Each patch is kept by one tile: of the archive's tiles whose footprint holds the patch centre,
the one whose own 100 km square holds it (the MGRS squares of a zone do not overlap), else the
one of the lowest UTM zone, then of the smallest tile id. A patch another tile owns is left out
(``dropped_overlap``). Grids of neighbouring tiles are not aligned, so kept patches of two tiles
can still share a strip of less than a patch along the line between them; no place is in two
patches' centres.
"""

from __future__ import annotations

import numpy as np
from pyproj import Transformer

from ben_builder.patches.grid import PatchGrid, TileGeometry
from ben_builder.patches.tiles import SQUARE_M, tile_geometry


def _rank(inside_own: np.ndarray, tile_id: str, epsg: int) -> list[tuple[bool, int, str]]:
    """The order of ownership: own square first, then lower zone, then the tile id."""
    zone = epsg % 100
    return [(not own, zone, tile_id) for own in inside_own.tolist()]


def _own_square(tile: TileGeometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points (in ``tile``'s CRS) lie in the tile's own 100 km MGRS square."""
    west = np.ceil(tile.ulx_m / SQUARE_M) * SQUARE_M  # the corner was snapped west and north
    north = np.floor(tile.uly_m / SQUARE_M) * SQUARE_M
    return (x >= west) & (x < west + SQUARE_M) & (y <= north) & (y > north - SQUARE_M)


def _inside(tile: TileGeometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether points (in ``tile``'s CRS) lie in the tile's footprint."""
    return (
        (x >= tile.ulx_m)
        & (x < tile.ulx_m + tile.size_m)
        & (y <= tile.uly_m)
        & (y > tile.uly_m - tile.size_m)
    )


def kept_places(
    tile_id: str, tile: TileGeometry, grid: PatchGrid, others: tuple[str, ...]
) -> np.ndarray:
    """Which patches of ``tile`` (id ``tile_id``) it keeps among the archive's ``others`` tiles.

    Args:
        tile_id: The product's tile.
        tile: Its geometry (from its metadata).
        grid: Its patch grid.
        others: Every tile of the archive (the product's own is skipped).

    Returns:
        A ``grid.shape`` boolean array: True where this tile keeps the patch.
    """
    rows, cols = grid.shape
    half = grid.patch_size_m / 2
    cx = tile.ulx_m + grid.patch_size_m * np.arange(cols) + half
    cy = tile.uly_m - grid.patch_size_m * np.arange(rows) - half
    x, y = (a.ravel() for a in np.meshgrid(cx, cy))
    mine = _rank(_own_square(tile, x, y), tile_id, tile.epsg)
    keep = np.ones(x.size, bool)
    for other_id in sorted(set(others) - {tile_id}):
        other = tile_geometry(other_id)
        if other.epsg == tile.epsg:
            ox, oy = x, y
        else:
            ox, oy = Transformer.from_crs(tile.epsg, other.epsg, always_xy=True).transform(x, y)
            ox, oy = np.asarray(ox), np.asarray(oy)
        covered = _inside(other, ox, oy)
        if not covered.any():
            continue
        theirs = _rank(_own_square(other, ox, oy), other_id, other.epsg)
        for i in np.flatnonzero(covered):
            if theirs[i] < mine[i]:
                keep[i] = False
    return keep.reshape(rows, cols)
