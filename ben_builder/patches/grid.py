"""The BigEarthNet patch grid: pure functions over tile geometry and arrays.

Patches start at the tile's upper-left corner, are ``patch_size_m`` square, do not overlap, and
the partial last row and column are dropped. Patch ``(x, y)`` has ``x`` the column from the left and
``y`` the row from the top, both from 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from affine import Affine


@dataclass(frozen=True)
class TileGeometry:
    """A tile's footprint on its UTM grid.

    Attributes:
        epsg: EPSG code of the tile's CRS (e.g. 32633).
        ulx_m: Easting of the tile's upper-left corner.
        uly_m: Northing of the tile's upper-left corner.
        size_m: Side of the (square) tile in metres.
    """

    epsg: int
    ulx_m: float
    uly_m: float
    size_m: float

    def size_px(self, resolution_m: int) -> int:
        """Side of the tile in pixels at ``resolution_m``."""
        n = self.size_m / resolution_m
        if n != int(n):
            raise ValueError(f"tile side {self.size_m} m is not a multiple of {resolution_m} m")
        return int(n)

    def transform(self, resolution_m: int) -> Affine:
        """Geotransform of the tile's raster at ``resolution_m``."""
        return Affine(resolution_m, 0.0, self.ulx_m, 0.0, -resolution_m, self.uly_m)

    @property
    def centre_m(self) -> tuple[float, float]:
        """Easting and northing of the tile centre."""
        return self.ulx_m + self.size_m / 2, self.uly_m - self.size_m / 2


@dataclass(frozen=True)
class Patch:
    """One cell of the patch grid.

    Attributes:
        x: Column index from the left, from 0.
        y: Row index from the top, from 0.
        ulx_m: Easting of the patch's upper-left corner.
        uly_m: Northing of the patch's upper-left corner.
        size_m: Side of the patch in metres.
    """

    x: int
    y: int
    ulx_m: float
    uly_m: float
    size_m: float

    def name(self, product_stem: str) -> str:
        """Patch name: the product stem, then ``_<x:02d>_<y:02d>``."""
        return f"{product_stem}_{self.x:02d}_{self.y:02d}"

    def transform(self, resolution_m: int) -> Affine:
        """Geotransform of the patch at ``resolution_m``."""
        return Affine(resolution_m, 0.0, self.ulx_m, 0.0, -resolution_m, self.uly_m)

    @property
    def bounds_m(self) -> tuple[float, float, float, float]:
        """``(ulx, uly, lrx, lry)`` in the tile CRS."""
        return self.ulx_m, self.uly_m, self.ulx_m + self.size_m, self.uly_m - self.size_m

    @property
    def centre_m(self) -> tuple[float, float]:
        """Easting and northing of the patch centre."""
        return self.ulx_m + self.size_m / 2, self.uly_m - self.size_m / 2


@dataclass(frozen=True)
class PatchGrid:
    """The grid of whole patches over one tile."""

    tile: TileGeometry
    patch_size_m: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of whole patches (91 x 91 for a full tile)."""
        n = int(self.tile.size_m // self.patch_size_m)
        return n, n

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def patch(self, x: int, y: int) -> Patch:
        """Patch at column ``x`` and row ``y``."""
        rows, cols = self.shape
        if not (0 <= x < cols and 0 <= y < rows):
            raise IndexError(f"patch ({x}, {y}) is outside the {cols} x {rows} grid")
        return Patch(
            x=x,
            y=y,
            ulx_m=self.tile.ulx_m + self.patch_size_m * x,
            uly_m=self.tile.uly_m - self.patch_size_m * y,
            size_m=self.patch_size_m,
        )

    def __iter__(self) -> Iterator[Patch]:
        """Patches in row-major order (y outer, x inner)."""
        rows, cols = self.shape
        for y in range(rows):
            for x in range(cols):
                yield self.patch(x, y)

    def patch_px(self, resolution_m: int) -> int:
        """Side of a patch in pixels at ``resolution_m``."""
        if self.patch_size_m % resolution_m:
            raise ValueError(f"patch {self.patch_size_m} m is not a multiple of {resolution_m} m")
        return self.patch_size_m // resolution_m

    def blocks(self, band: np.ndarray, resolution_m: int) -> np.ndarray:
        """View a whole-tile band as ``(rows, cols, size_px, size_px)`` patch blocks.

        The partial last row and column are dropped. No data is copied.

        Args:
            band: 2-D array covering the whole tile at ``resolution_m``.
            resolution_m: The band's pixel size.

        Returns:
            A read-only view; ``blocks[y, x]`` is patch ``(x, y)``.
        """
        n = self.tile.size_px(resolution_m)
        if band.shape != (n, n):
            raise ValueError(f"band shape {band.shape} != tile shape {(n, n)} at {resolution_m} m")
        p = self.patch_px(resolution_m)
        rows, cols = self.shape
        view = band[: rows * p, : cols * p].reshape(rows, p, cols, p).swapaxes(1, 2)
        view.flags.writeable = False
        return view


def split_for(patch: Patch, tile: TileGeometry) -> str:
    """BigEarthNet v2 split by Chebyshev distance from patch centre to tile centre.

    ``test`` if d <= s/4, ``validation`` if s/4 < d <= s*sqrt(2)/4, else ``train``.
    """
    (px, py), (tx, ty) = patch.centre_m, tile.centre_m
    d = max(abs(px - tx), abs(py - ty))
    s = tile.size_m
    if d <= s / 4:
        return "test"
    if d <= s * np.sqrt(2) / 4:
        return "validation"
    return "train"
