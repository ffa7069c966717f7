"""The country of every patch, from country boundaries (Natural Earth's, shipped, by default).

Three rules, each measured in the patch's own UTM zone: the country nearest to the patch
centre, the one containing it, or the one nearest to the whole patch square with ties to the
larger country (the published BigEarthNet v2's rule). Only the countries near the patches are
projected: a world layer in one UTM zone distorts the countries far from it beyond use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ben_builder.errors import SpecError
from ben_builder.specs import specs_dir

log = logging.getLogger(__name__)


def natural_earth() -> Path:
    """Natural Earth's admin-0 countries at 1:110m, v5.1.2, as shipped (the file v2 used)."""
    return specs_dir() / "naturalearth" / "ne_110m_admin_0_countries.shp"


CountryRule = Literal["closest", "within", "square"]


def read_boundaries(
    path: Path, field: str = "NAME", candidates: Sequence[str] | None = None
) -> Any:
    """Country polygons from a boundaries file, one (dissolved) row per candidate country.

    Args:
        path: Any vector file GDAL reads (shapefile, GeoPackage, GeoJSON); v2 used Natural Earth's
            admin-0 countries at 1:110m, v5.1.2.
        field: The attribute holding the country name (matched case-insensitively: ``NAME`` in
            Natural Earth's files, ``name`` in its low-resolution copies).
        candidates: Country names to choose among; None for every feature of the file.

    Returns:
        A GeoDataFrame with columns ``country`` and ``geometry``, sorted by country.

    Raises:
        SpecError: the file cannot be read, lacks the field, or lacks a candidate country.
    """
    import geopandas as gpd

    try:
        borders = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises its own DataSourceError, OSError, ...
        raise SpecError(f"{path}: cannot read country boundaries ({exc})") from exc
    by_lower = {str(c).lower(): str(c) for c in borders.columns}
    if field.lower() not in by_lower:
        fields = [c for c in borders.columns if c != "geometry"]
        raise SpecError(f"{path}: no field {field!r} (fields: {fields}); set countries.field")
    borders = borders.rename(columns={by_lower[field.lower()]: "country"})
    borders = borders[["country", "geometry"]]
    if candidates is not None:
        absent = sorted(set(candidates) - set(borders["country"]))
        if absent:
            raise SpecError(
                f"{path}: no feature named {absent} in field {field!r}; "
                "set countries.candidates or use a file that has them"
            )
        borders = borders[borders["country"].isin(candidates)]
    return borders.dissolve(by="country").reset_index().sort_values("country")


def closest_country(frame: pd.DataFrame, borders: Any, rule: CountryRule = "closest") -> pd.Series:
    """Country of each patch, measured in the patch's own UTM zone.

    Rules:
        ``square`` (the published v2's): the country nearest to the whole 1,200 m patch square;
            a square at distance 0 from several (it touches a border) goes to the one of the
            largest area (Serbia over Kosovo, Belgium over Luxembourg). Sea patches get one.
        ``closest``: the country nearest to the patch centre (distance 0 inside it; ties to the
            first name in alphabetical order). Sea patches get one.
        ``within``: the country containing the patch centre; None outside every country.

    Args:
        frame: Columns ``epsg``, ``ulx_m``, ``uly_m`` (patch upper-left corners, 1,200 m patches).
        borders: From :func:`read_boundaries`.
        rule: ``square``, ``closest`` or ``within``.
    """
    import geopandas as gpd

    out = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for epsg, group in frame.groupby("epsg"):
        local = _near(borders, group, int(str(epsg))).to_crs(f"EPSG:{epsg}").reset_index(drop=True)
        if rule == "square":
            out.loc[group.index] = _nearest_to_square(group, local)
            continue
        pts = gpd.GeoDataFrame(
            index=group.index,
            geometry=gpd.points_from_xy(
                group["ulx_m"] + PATCH_HALF_M, group["uly_m"] - PATCH_HALF_M
            ),
            crs=f"EPSG:{epsg}",
        )
        if rule == "closest":
            joined = gpd.sjoin_nearest(pts, local, how="left")
        else:
            joined = gpd.sjoin(pts, local, how="left", predicate="within")
        joined = joined.sort_values("country", kind="stable")
        joined = joined[~joined.index.duplicated(keep="first")]
        for idx, country in joined["country"].items():
            out.at[idx] = country if isinstance(country, str) else None
    return out


#: Half the side of a patch (its centre from its corner).
PATCH_HALF_M = 600.0


def _nearest_to_square(group: pd.DataFrame, local: Any) -> list[str]:
    """The country nearest to each patch square of ``group`` (ties: the largest country)."""
    import shapely

    x0 = group["ulx_m"].to_numpy(float)
    y0 = group["uly_m"].to_numpy(float)
    squares = shapely.box(x0, y0 - 2 * PATCH_HALF_M, x0 + 2 * PATCH_HALF_M, y0)
    # largest first, so the first of the nearest is the largest among equally near countries
    by_area = local.assign(area=local.geometry.area).sort_values(
        ["area", "country"], ascending=[False, True]
    )
    geoms = np.asarray(by_area.geometry.values)
    names = by_area["country"].to_numpy(dtype=object)
    distance = shapely.distance(squares[:, None], geoms[None, :])
    return [str(n) for n in names[np.argmin(distance, axis=1)]]


#: Margins (degrees) tried around the patches until a country lies within one.
MARGINS_DEG = (1.0, 3.0, 10.0, 30.0, 90.0)


def _near(borders: Any, group: pd.DataFrame, epsg: int) -> Any:
    """The countries of ``borders`` near ``group``'s patches, clipped around them.

    The smallest margin ``m`` with a country within it is found; every country within ``3 m``
    can be the nearest one (none further can), and each is clipped to ``6 m`` around the
    patches, which keeps every part of it that can be nearest.
    """
    import shapely
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs = np.concatenate([group["ulx_m"].to_numpy(float), group["ulx_m"].to_numpy(float) + 1200])
    ys = np.concatenate([group["uly_m"].to_numpy(float), group["uly_m"].to_numpy(float) - 1200])
    lon, lat = to_lonlat.transform(xs, ys)
    west, south, east, north = np.min(lon), np.min(lat), np.max(lon), np.max(lat)
    lonlat = borders.to_crs(4326)

    def box(m: float) -> Any:
        return shapely.box(
            max(west - m, -180), max(south - m, -90), min(east + m, 180), min(north + m, 90)
        )

    for m in MARGINS_DEG:
        if lonlat.intersects(box(m)).any():
            near = lonlat[lonlat.intersects(box(3 * m))].copy()
            near["geometry"] = near.geometry.intersection(box(6 * m))
            return near[~near.geometry.is_empty]
    return lonlat
