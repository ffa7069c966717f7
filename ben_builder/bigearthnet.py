"""Rules for reproducing the published BigEarthNet archives, in one place.

The facts live in ``data_specs/bigearthnet/`` (copied from the published releases; see the README
there): the product lists of v1 (125 L1C products) and v2 (115 L2A stems), the v1 flag lists, and
BigEarthNet v1's own table of patch names. This module turns them into the rules a reproduction
needs:

- :func:`v1_name`: the published ``s2v1_name`` of a v2 patch. It is looked up, not derived: for 30
  of the 115 products the v1 name's time differs from the product's sensing time (another second,
  or an hour without its leading zero), and a formula makes names of different tiles collide.
- :func:`cloud_or_shadow_names` and :func:`snow_names`: the v1 patches v2 flags.
- :data:`COUNTRIES` and :attr:`Reproduction.country_rule`: v2's countries, the ten BigEarthNet
  countries nearest to each patch square (Natural Earth admin-0 1:110m, v5.1.2), so sea patches
  get one too (the rules live in :mod:`ben_builder.patches.countries`).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ben_builder.config import ProductListFilter
from ben_builder.errors import SpecError
from ben_builder.patches.countries import CountryRule
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
    def keeps_overlaps(self) -> bool:
        """Whether every tile keeps its patches where tiles overlap (as the published v2 did)."""
        return self.release is not None

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
