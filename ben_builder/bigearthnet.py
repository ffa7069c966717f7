"""Rules for reproducing the published BigEarthNet archives, in one place.

The facts live in ``data_specs/bigearthnet/`` (copied from the published releases; see the README
there): the product lists of v1 (125 L1C products) and v2 (115 L2A stems), the v1 flag lists, and
BigEarthNet v1's own table of patch names. This module turns them into the rules a reproduction
needs:

- :func:`v1_name`: the published ``s2v1_name`` of a v2 patch. It is looked up, not derived: for 30
  of the 115 products the v1 name's time differs from the product's sensing time (another second,
  or an hour without its leading zero), and a formula makes names of different tiles collide.
- :func:`cloud_or_shadow_names` and :func:`snow_names`: the v1 patches v2 flags.
- :func:`read_boundaries` and :func:`closest_country`: v2's country rule, the closest of the ten
  BigEarthNet countries (Natural Earth admin-0 1:110m, v5.1.2) to each patch, so sea patches get
  a country too.
- :func:`v2_stem` and :func:`v2_l1c_products`: which L1C products v2 was made from and the names
  its patches carry (sen2cor output, baseline ``N9999``).

The chain does not test the configuration's ``reproduce`` switch itself: it asks the
:class:`Reproduction` of :func:`reproduction` (a new archive's one changes nothing).
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ben_builder.config import ProductListFilter
from ben_builder.errors import SpecError
from ben_builder.product.names import acquisition
from ben_builder.specs import specs_dir

log = logging.getLogger(__name__)

#: The ten countries of BigEarthNet, as Natural Earth names them (field ``NAME``).
COUNTRIES: tuple[str, ...] = (
    "Austria",
    "Belgium",
    "Finland",
    "Ireland",
    "Kosovo",
    "Lithuania",
    "Luxembourg",
    "Portugal",
    "Serbia",
    "Switzerland",
)

V1_NAME_TABLE = "v1_patch_names_and_products.csv.bz2"
V1_PRODUCTS = "v1_l1c_products.csv"
V2_PRODUCTS = "v2_l2a_products.csv"
CLOUD_OR_SHADOW_LIST = "v1_patches_with_cloud_and_shadow.csv"
SNOW_LIST = "v1_patches_with_seasonal_snow.csv"
V1_S2_S1_PAIRS = "v1_s2_s1_pairs.csv.bz2"

#: Baseline in the names of products made locally with sen2cor (as v2's names carry).
LOCAL_BASELINE = "N9999"

_PATCH_RE = re.compile(r"^(?P<product>.+)_(?P<x>\d+)_(?P<y>\d+)$")


def natural_earth() -> Path:
    """Natural Earth's admin-0 countries at 1:110m, v5.1.2, as shipped (the file v2 used)."""
    return specs_dir() / "naturalearth" / "ne_110m_admin_0_countries.shp"


def data_dir() -> Path:
    """Folder of the BigEarthNet reference files (``data_specs/bigearthnet``)."""
    return specs_dir() / "bigearthnet"


def v2_stem(product_name: str) -> str:
    """The v2 product stem of an L1C or L2A product (``S2A_MSIL2A_<sensing>_N9999_R022_T33UUP``).

    v2's patches are named after sen2cor's local output, whose baseline is ``N9999``.
    """
    mission, sensing, orbit, tile = acquisition(product_name).split("_")
    return f"{mission}_MSIL2A_{sensing}_{LOCAL_BASELINE}_{orbit}_{tile}"


def _read_column(name: str, column: str | None) -> list[str]:
    path = data_dir() / name
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            if column is None:
                return [line.strip() for line in fh if line.strip()]
            reader = csv.DictReader(fh)
            return [row[column].strip() for row in reader]
    except (OSError, KeyError) as exc:
        raise SpecError(f"{path}: cannot read BigEarthNet list ({exc})") from exc


def v1_l1c_products() -> list[str]:
    """The 125 L1C product names (``.SAFE``) BigEarthNet v1 was cut from."""
    return _read_column(V1_PRODUCTS, "tile")


def v2_l2a_stems() -> list[str]:
    """The 115 L2A product stems v2's patch names start with."""
    return _read_column(V2_PRODUCTS, "product")


def v2_l1c_products() -> list[str]:
    """The 115 L1C products (of v1's 125) that v2 was made from, in v2's list order."""
    by_acq = {acquisition(p): p for p in v1_l1c_products()}
    out = []
    for stem in v2_l2a_stems():
        acq = acquisition(stem)
        if acq not in by_acq:
            raise SpecError(
                f"{data_dir() / V2_PRODUCTS}: {stem} has no L1C product in {V1_PRODUCTS}"
            )
        out.append(by_acq[acq])
    return out


@functools.cache
def cloud_or_shadow_names() -> frozenset[str]:
    """v1 names of the patches flagged for cloud or cloud shadow (9,280)."""
    return frozenset(_read_column(CLOUD_OR_SHADOW_LIST, None))


@functools.cache
def snow_names() -> frozenset[str]:
    """v1 names of the patches flagged for seasonal snow (61,707)."""
    return frozenset(_read_column(SNOW_LIST, None))


@functools.cache
def _v1_table() -> pd.DataFrame:
    """v1's name table: columns ``v1_name``, ``acquisition``, ``x``, ``y`` (590,326 rows)."""
    import pyarrow.csv as pacsv

    path = data_dir() / V1_NAME_TABLE
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["v1_name", "product", "link"]),
            convert_options=pacsv.ConvertOptions(include_columns=["v1_name", "product"]),
        )
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read BigEarthNet v1's name table ({exc})") from exc
    frame = table.to_pandas()
    acq = {p: acquisition(p) for p in frame["product"].unique()}
    xy = frame["v1_name"].str.rsplit("_", n=2, expand=True)
    return pd.DataFrame(
        {
            "v1_name": frame["v1_name"],
            "acquisition": frame["product"].map(acq),
            "x": xy[1].astype(np.int32),
            "y": xy[2].astype(np.int32),
        }
    )


@functools.cache
def s1_pairs() -> dict[str, str]:
    """``{s2v1_name: s1_name}`` of every published v2 patch (549,488 pairs).

    Raises:
        SpecError: the pairs file cannot be read.
    """
    import pyarrow.csv as pacsv

    path = data_dir() / V1_S2_S1_PAIRS
    try:
        table = pacsv.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read the published S2/S1 pairs ({exc})") from exc
    return dict(zip(table["s2v1_name"].to_pylist(), table["s1_name"].to_pylist(), strict=True))


@functools.cache
def v1_names_of(product_name: str) -> dict[tuple[int, int], str]:
    """``{(x, y): v1 name}`` of one acquisition (any product name or stem of it); may be empty."""
    table = _v1_table()
    rows = table[table["acquisition"] == acquisition(product_name)]
    return {
        (int(x), int(y)): str(n)
        for x, y, n in zip(rows["x"], rows["y"], rows["v1_name"], strict=True)
    }


def v1_name(patch_id: str) -> str | None:
    """The published ``s2v1_name`` of a v2 patch, or None for a patch v1 did not have.

    Args:
        patch_id: A v2 patch name, ``<product stem>_<x>_<y>`` (e.g.
            ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57``).
    """
    m = _PATCH_RE.match(patch_id)
    if not m:
        raise SpecError(f"{patch_id!r} is not a patch name <product>_<x>_<y>")
    return v1_names_of(m["product"]).get((int(m["x"]), int(m["y"])))


CountryRule = Literal["closest", "within", "square"]


def read_boundaries(
    path: Path, field: str = "NAME", candidates: Sequence[str] | None = COUNTRIES
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
        local = borders.to_crs(f"EPSG:{epsg}").reset_index(drop=True)
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


@dataclass(frozen=True)
class Reproduction:
    """What the chain does differently to reproduce a published release (nothing for a new one).

    Attributes:
        release: ``"bigearthnet-v2"``, or ``None`` for a new archive (every rule generic).
    """

    release: Literal["bigearthnet-v2"] | None = None

    @property
    def v1_names(self) -> Literal["formula", "bigearthnet"]:
        """Where ``s2v1_name`` comes from: v1's own table, or the formula of a new archive."""
        return "bigearthnet" if self.release else "formula"

    @property
    def l2a_only(self) -> bool:
        """Whether an L1C product without its L2A is a failure (v2 is made of L2A products)."""
        return self.release is not None

    @property
    def country_rule(self) -> CountryRule | None:
        """The country rule when the configuration sets none (v2: from the patch square)."""
        return "square" if self.release else None

    @property
    def country_candidates(self) -> tuple[str, ...] | None:
        """The countries to choose among when the configuration names none."""
        return COUNTRIES if self.release else None

    def product_list(self) -> ProductListFilter | None:
        """The products of a folder to take when the configuration lists none.

        v2's products by acquisition: its L1C products (for sen2cor) or the L2A made of them.
        """
        if self.release is None:
            return None
        return ProductListFilter(
            csv=data_dir() / V2_PRODUCTS, column="product", match="acquisition"
        )

    def s1_pairs(self) -> dict[str, str] | None:
        """``{s2v1_name: s1_name}`` of the published patches (None: a new archive has none)."""
        return s1_pairs() if self.release else None

    def flag_lists(self) -> tuple[frozenset[str], frozenset[str]] | None:
        """The published cloud-or-shadow and snow lists, when the configuration gives none."""
        if self.release is None:
            return None
        return cloud_or_shadow_names(), snow_names()


def reproduction(release: Literal["bigearthnet-v2"] | None) -> Reproduction:
    """The rules of ``release`` (a run configuration's ``reproduce``; ``None``: a new archive)."""
    return Reproduction(release)
