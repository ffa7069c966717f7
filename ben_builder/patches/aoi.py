"""An area of interest: which tiles touch it, and which of a tile's patches intersect it.

The area is given in longitude and latitude (EPSG:4326): a bounding box, or the union of the
features of a GeoJSON or GeoPackage file. It is measured on each tile's own UTM grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from ben_builder.errors import SpecError
from ben_builder.patches.grid import PatchGrid, TileGeometry


def read_area(bbox: tuple[float, float, float, float] | None, path: Path | None) -> str:
    """The area as WKT in EPSG:4326, from a bounding box or a vector file.

    Raises:
        SpecError: neither or both are given, the box is not west < east and south < north,
            or the file cannot be read or holds no area.
    """
    if (bbox is None) == (path is None):
        raise SpecError("aoi: give either bbox [west, south, east, north] or path (GeoJSON, GPKG)")
    if bbox is not None:
        west, south, east, north = bbox
        if not (west < east and south < north):
            raise SpecError(f"aoi.bbox {list(bbox)}: must be [west, south, east, north], degrees")
        return shapely.box(west, south, east, north).wkt
    import geopandas as gpd

    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio's DataSourceError, OSError, ...
        raise SpecError(f"{path}: cannot read the area of interest ({exc})") from exc
    if frame.crs is not None:
        frame = frame.to_crs(4326)
    area = shapely.union_all(frame.geometry.values)
    if area is None or area.is_empty or area.area == 0:
        raise SpecError(f"{path}: the area of interest holds no polygon")
    return str(area.wkt)


def _in_utm(area_wkt: str, epsg: int) -> Any:
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    area = shapely.segmentize(shapely.from_wkt(area_wkt), 0.01)  # curved edges stay curved
    return shapely.transform(area, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))


def touches_tile(area_wkt: str, tile: TileGeometry) -> bool:
    """Whether the area and the tile's footprint meet."""
    square = shapely.box(tile.ulx_m, tile.uly_m - tile.size_m, tile.ulx_m + tile.size_m, tile.uly_m)
    return bool(shapely.intersects(_in_utm(area_wkt, tile.epsg), square))


def patches_in(area_wkt: str, grid: PatchGrid) -> np.ndarray:
    """Which patches of ``grid`` intersect the area (a ``grid.shape`` boolean array)."""
    rows, cols = grid.shape
    t, s = grid.tile, grid.patch_size_m
    x0 = t.ulx_m + s * np.arange(cols)
    y0 = t.uly_m - s * np.arange(rows)
    xx, yy = np.meshgrid(x0, y0)
    squares = shapely.box(xx.ravel(), (yy - s).ravel(), (xx + s).ravel(), yy.ravel())
    area = _in_utm(area_wkt, t.epsg)
    return np.asarray(shapely.intersects(area, squares)).reshape(rows, cols)
