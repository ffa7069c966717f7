"""Sentinel-2 product names: their fields, and the acquisition they share across levels.

An acquisition is identified across levels by (mission, sensing time, relative orbit, tile), the
part of a product name that the L1C and its L2A share.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ben_builder.errors import SpecError, UnsupportedProductError

log = logging.getLogger(__name__)


PRODUCT_NAME_RE = re.compile(
    r"^(?P<mission>S2[ABCD])_MSI(?P<level>L1C|L2A)_(?P<sensing>\d{8}T\d{6})_N(?P<baseline>\d{4})"
    r"_R(?P<orbit>\d{3})_(?P<tile>T\d{2}[A-Z]{3})_(?P<generation>\d{8}T\d{6})$"
)


PRODUCT_TYPES = {"L1C": "S2MSI1C", "L2A": "S2MSI2A"}


def bare_name(name: str) -> str:
    """A product's name without ``.SAFE``, ``.zip``, ``.SAFE.zip``, ``.json`` or ``.zarr``."""
    return re.sub(r"((\.SAFE)?(\.zip)?|\.json|\.zarr)$", "", name)


@dataclass(frozen=True)
class ProductName:
    """The fields of a Sentinel-2 compact product name (``S2A_MSIL2A_..._T33UUP_<gen>``)."""

    name: str
    mission: str
    level: str
    sensing_time: datetime
    baseline: str
    relative_orbit: int
    tile_id: str
    generation_time: datetime

    @property
    def stem(self) -> str:
        """The name without the generation time: the prefix of every patch name."""
        return self.name.rsplit("_", 1)[0]

    @classmethod
    def parse(cls, name: str) -> ProductName:
        """Parse a product name (with or without ``.SAFE`` / ``.zip``).

        Raises:
            UnsupportedProductError: not a compact-format Sentinel-2 L1C/L2A name.
        """
        bare = bare_name(name)
        m = PRODUCT_NAME_RE.match(bare)
        if not m:
            raise UnsupportedProductError(
                f"{name!r} is not a Sentinel-2 L1C/L2A product name of the form "
                "S2A_MSIL2A_YYYYMMDDTHHMMSS_Nxxxx_Rxxx_Txxxxx_YYYYMMDDTHHMMSS "
                "(old-format products from before December 2016 are not supported)"
            )
        fmt = "%Y%m%dT%H%M%S"
        return cls(
            name=bare,
            mission=m["mission"],
            level=m["level"],
            sensing_time=datetime.strptime(m["sensing"], fmt),
            baseline=m["baseline"],
            relative_orbit=int(m["orbit"]),
            tile_id=m["tile"],
            generation_time=datetime.strptime(m["generation"], fmt),
        )


_ACQ_RE = re.compile(
    r"^(?P<mission>S2[ABCD])_MSI(?P<level>L1C|L2A)_(?P<sensing>\d{8}T\d{6})_N\d{4}_"
    r"R(?P<orbit>\d{3})_(?P<tile>T\d{2}[A-Z]{3})"
)


def acquisition(name: str) -> str:
    """``<mission>_<sensing>_R<orbit>_<tile>`` of a product name, stem or patch name.

    Raises:
        SpecError: ``name`` does not start like a Sentinel-2 L1C/L2A product name.
    """
    m = _ACQ_RE.match(Path(name).name)
    if not m:
        raise SpecError(f"{name!r} does not start like a Sentinel-2 L1C/L2A product name")
    return f"{m['mission']}_{m['sensing']}_R{m['orbit']}_{m['tile']}"
