"""What to search for: area, dates, product level, cloud cover, or an exact list of names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import shapely
from shapely.geometry import box, shape

from ben_builder.errors import SpecError
from ben_builder.product.names import PRODUCT_TYPES
from ben_builder.specs import check_tile_id


@dataclass(frozen=True)
class Query:
    """A product search.

    Attributes:
        level: ``L1C`` or ``L2A``.
        start: First sensing date (inclusive).
        end: Last sensing date (inclusive).
        area_wkt: Search area in EPSG:4326 WKT.
        tiles: MGRS tile ids (``T33UUP``); products of other tiles are left out.
        max_cloud: Maximum cloud cover in percent.
        names: Exact product names (with or without ``.SAFE``); other criteria are ignored.
    """

    level: str = "L2A"
    start: date | None = None
    end: date | None = None
    area_wkt: str | None = None
    tiles: tuple[str, ...] = ()
    max_cloud: float | None = None
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in PRODUCT_TYPES:
            raise SpecError(f"level must be L1C or L2A, got {self.level!r}")
        if self.start and self.end and self.end < self.start:
            raise SpecError(f"end date {self.end} is before start date {self.start}")
        if not (self.names or self.tiles or self.area_wkt):
            raise SpecError("give an area (GeoJSON, bbox), MGRS tiles or a list of product names")
        for tile in self.tiles:  # a tile without its T would be a query that never matches
            check_tile_id(tile)

    @property
    def product_type(self) -> str:
        """The hub's product type (``S2MSI1C`` / ``S2MSI2A``)."""
        return PRODUCT_TYPES[self.level]


def area_from_bbox(bbox: tuple[float, float, float, float]) -> str:
    """WKT polygon of a ``(west, south, east, north)`` box in degrees."""
    w, s, e, n = bbox
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise SpecError(f"bbox {bbox} is not west, south, east, north in degrees")
    return str(box(w, s, e, n).wkt)


def area_from_geojson(path: Path) -> str:
    """Union of the geometries of a GeoJSON file (EPSG:4326), as WKT."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: not a readable GeoJSON file ({exc})") from exc
    if doc.get("type") == "FeatureCollection":
        geoms = [shape(f["geometry"]) for f in doc.get("features", [])]
    elif doc.get("type") == "Feature":
        geoms = [shape(doc["geometry"])]
    else:
        geoms = [shape(doc)]
    if not geoms:
        raise SpecError(f"{path}: no geometries")
    return str(shapely.union_all(geoms).wkt)
