"""Read CORINE Land Cover 2018 polygons for one tile and rasterize them onto its 10 m grid.

Only the tile's bounding box is read (in the file's CRS, through the GeoPackage's R-tree spatial
index with pyogrio), so memory grows with the tile's polygons, not with the 8 GB file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio.features
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import CRS, Transformer

from ben_builder.errors import ClcError
from ben_builder.patches.grid import TileGeometry
from ben_builder.specs import ClcSpec

log = logging.getLogger(__name__)


def _layer(path: Path, spec: ClcSpec) -> str:
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except (DataSourceError, OSError) as exc:
        raise ClcError(f"{path}: cannot open as a vector dataset ({exc})") from exc
    if spec.source.layer in layers:
        return spec.source.layer
    if len(layers) == 1:
        return layers[0]
    raise ClcError(
        f"{path}: no layer {spec.source.layer!r} (layers: {layers}); pass the CLC 2018 GeoPackage"
    )


def check_clc(path: Path, spec: ClcSpec) -> tuple[str, str]:
    """Check that ``path`` is CLC 2018 data: readable, the layer, the code field, the CRS.

    Returns:
        The layer and the code field.

    Raises:
        ClcError: what is wrong, naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise ClcError(
            f"{path}: CLC file not found; give the CLC 2018 GeoPackage (clc_path, or --clc)"
        )
    layer = _layer(path, spec)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except (DataSourceError, DataLayerError) as exc:
        raise ClcError(f"{path}: cannot read layer {layer!r}: {exc}") from exc
    field = spec.source.code_field
    if field not in list(info["fields"]):
        raise ClcError(
            f"{path}: layer {layer!r} has no {field!r} field (fields: {list(info['fields'])}); "
            "this is not CLC 2018 data"
        )
    file_crs = CRS.from_user_input(info["crs"]) if info["crs"] else None
    expected = CRS.from_user_input(spec.source.crs)
    if file_crs is None or not file_crs.equals(expected):
        raise ClcError(
            f"{path}: CRS is {file_crs.to_string() if file_crs else 'undefined'}, expected "
            f"{spec.source.crs} (ETRS89-LAEA) as in the official CLC 2018 release"
        )
    return layer, field


def _tile_bbox(tile: TileGeometry, spec: ClcSpec) -> tuple[float, float, float, float]:
    to_file = Transformer.from_crs(tile.epsg, CRS.from_user_input(spec.source.crs), always_xy=True)
    return tuple(  # type: ignore[return-value]
        to_file.transform_bounds(
            tile.ulx_m,
            tile.uly_m - tile.size_m,
            tile.ulx_m + tile.size_m,
            tile.uly_m,
            densify_pts=21,
        )
    )


def clc_covers(path: Path, tile: TileGeometry, spec: ClcSpec) -> bool:
    """Whether any CLC polygon's bounding box meets the tile (a quick check before work)."""
    layer, field = check_clc(path, spec)
    try:
        frame = pyogrio.read_dataframe(
            path,
            layer=layer,
            columns=[field],
            read_geometry=False,
            bbox=_tile_bbox(tile, spec),
            max_features=1,
        )
    except (DataSourceError, DataLayerError) as exc:
        raise ClcError(f"{path}: cannot read polygons: {exc}") from exc
    return len(frame) > 0


def read_clc(path: Path, tile: TileGeometry, spec: ClcSpec) -> gpd.GeoDataFrame:
    """Polygons (``Code_18`` + geometry) of the CLC file that overlap ``tile``, in the tile's CRS.

    Args:
        path: The CLC GeoPackage (or a shapefile with the same schema).
        tile: The tile whose footprint to read.
        spec: CLC schema and codes.

    Raises:
        ClcError: unreadable file, missing ``Code_18`` field, unexpected CRS, unknown code.
    """
    layer, field = check_clc(path, spec)
    bbox = _tile_bbox(tile, spec)
    try:
        frame = pyogrio.read_dataframe(path, layer=layer, columns=[field], bbox=bbox)
    except (DataSourceError, DataLayerError) as exc:
        raise ClcError(f"{path}: cannot read polygons: {exc}") from exc
    codes = frame[field].astype(str)
    unknown = sorted(set(codes) - spec.all_codes)
    if unknown:
        raise ClcError(f"{path}: unknown {field} codes {unknown[:10]}; expected CLC Level-3 codes")
    geoms = frame.geometry.values
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.info("%s: repairing %d invalid geometries", path.name, int(invalid.sum()))
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    crs = CRS.from_user_input(spec.source.crs)
    out = gpd.GeoDataFrame({"code": codes.astype(np.uint16).values}, geometry=geoms, crs=crs)
    return out.to_crs(epsg=tile.epsg)


def rasterize_codes(
    polygons: gpd.GeoDataFrame, tile: TileGeometry, no_polygon: int, strip_px: int = 32
) -> np.ndarray:
    """CLC code of every 10 m pixel of the tile (pixel-centre rule); ``no_polygon`` elsewhere.

    The tile is rasterized in strips of ``strip_px`` rows, each with the polygons clipped to it:
    GDAL's scanline fill walks every edge of a polygon for each row it covers, so clipping keeps
    the cost proportional to the edges near each row (and it does not depend on GDAL_CACHEMAX,
    which makes a whole-tile call far slower). Strip edges fall on pixel edges, so no pixel
    centre moves. Thin strips pay for themselves, also against 128 rows at the chain's
    ``GDAL_CACHEMAX``: ``make bench-label`` measures them (README, "Benchmarks").
    """
    n = tile.size_px(10)
    out = np.full((n, n), no_polygon, np.uint16)
    if len(polygons) == 0:
        return out
    geoms = np.asarray(polygons.geometry.values)
    codes = polygons["code"].to_numpy(dtype=np.int64)
    tree = shapely.STRtree(geoms)
    xmin, xmax = tile.ulx_m, tile.ulx_m + tile.size_m
    for r0 in range(0, n, strip_px):
        r1 = min(n, r0 + strip_px)
        ymax, ymin = tile.uly_m - 10 * r0, tile.uly_m - 10 * r1
        idx = np.sort(tree.query(shapely.box(xmin, ymin, xmax, ymax)))
        clipped = shapely.clip_by_rect(geoms[idx], xmin, ymin, xmax, ymax)
        keep = ~shapely.is_empty(clipped)
        if not keep.any():
            continue
        out[r0:r1] = rasterio.features.rasterize(
            zip(geojson_shapes(clipped[keep]), codes[idx][keep], strict=True),
            out_shape=(r1 - r0, n),
            transform=rasterio.Affine(10, 0, xmin, 0, -10, ymax),
            fill=no_polygon,
            all_touched=False,
            dtype="uint16",
        )
    return out


_POLYGONAL = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def geojson_shapes(geoms: np.ndarray) -> list[object]:
    """GeoJSON-like mappings of ``geoms`` for :func:`rasterio.features.rasterize`, same order.

    Polygons and multipolygons become the mappings their ``__geo_interface__`` gives, built
    from their coordinate arrays all at once (:func:`shapely.to_ragged_array`) instead of one
    coordinate at a time (a tile's strips clip out tens of thousands of pieces). Other
    geometries are passed on as they are.
    """
    types = shapely.get_type_id(geoms)
    polygonal = np.flatnonzero(np.isin(types, _POLYGONAL))
    out: list[object] = list(geoms)
    if not len(polygonal):
        return out
    kind, coords, offsets = shapely.to_ragged_array(geoms[polygonal])
    xy = coords.tolist()
    ring_ends, poly_ends = offsets[0].tolist(), offsets[1].tolist()
    rings = [xy[a:b] for a, b in zip(ring_ends[:-1], ring_ends[1:], strict=True)]
    polys = [rings[a:b] for a, b in zip(poly_ends[:-1], poly_ends[1:], strict=True)]
    if kind == shapely.GeometryType.POLYGON:
        parts = [[poly] for poly in polys]
    else:  # polygons among multipolygons come as one-part multipolygons
        part_ends = offsets[2].tolist()
        parts = [polys[a:b] for a, b in zip(part_ends[:-1], part_ends[1:], strict=True)]
    for k, t, part in zip(polygonal.tolist(), types[polygonal].tolist(), parts, strict=True):
        out[k] = (
            {"type": "Polygon", "coordinates": part[0]}
            if t == shapely.GeometryType.POLYGON
            else {"type": "MultiPolygon", "coordinates": part}
        )
    return out
