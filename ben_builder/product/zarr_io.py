"""Zarr arrays read window by window through zarr-python, as the chain reads rasters.

A Zarr band's path is ``zarr:<store>#<array>`` (the store a local folder or an ``http(s)://``
URL); :func:`open_band` gives an object with the few members of a rasterio dataset the readers
use (``height``, ``width``, ``count``, ``read(1, window=)``). zarr-python reads Zarr v2 and v3
alike (GDAL 3.10's Zarr driver reads no v3 array zarr-python writes) and fetches only the chunks
a window covers; remote stores go through fsspec's HTTP file system.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

PREFIX = "zarr:"


class ZarrReadError(OSError):
    """A Zarr array could not be opened or decoded (turned into the product's error)."""


def band_path(store: str, array: str) -> str:
    """The path of ``array`` in ``store`` (see the module's docstring)."""
    return f"{PREFIX}{store}#{array}"


def is_zarr_path(path: str) -> bool:
    """Whether a band path names a Zarr array."""
    return path.startswith(PREFIX)


class ZarrBand:
    """One 2-D Zarr array, read as band 1 of a raster."""

    count = 1

    def __init__(self, array: Any) -> None:
        """Wrap an open zarr-python array of two dimensions."""
        if len(array.shape) != 2:
            raise ZarrReadError(f"a band is a 2-D array, not of shape {array.shape}")
        self._array = array
        self.height, self.width = (int(v) for v in array.shape)

    def read(self, indexes: int = 1, window: Any = None) -> np.ndarray:
        """The array, or a rasterio ``Window`` of it (only the chunks it covers are read)."""
        try:
            if window is None:
                return np.asarray(self._array[:])
            r0, c0 = int(window.row_off), int(window.col_off)
            return np.asarray(
                self._array[r0 : r0 + int(window.height), c0 : c0 + int(window.width)]
            )
        except Exception as exc:  # codecs', fsspec's and the file system's errors alike
            raise ZarrReadError(f"cannot decode: {exc}") from exc


@contextmanager
def open_band(path: str) -> Iterator[ZarrBand]:
    """Open the array a ``zarr:<store>#<array>`` path names.

    Raises:
        ZarrReadError: no such array, or it cannot be read.
    """
    import zarr

    store, _, array = path.removeprefix(PREFIX).rpartition("#")
    try:
        opened = zarr.open_array(store, path=array, mode="r")
    except Exception as exc:  # zarr's, fsspec's and the file system's errors alike
        raise ZarrReadError(f"no readable array {array} in {store}: {exc}") from exc
    yield ZarrBand(opened)
