"""Patch files: GeoTIFFs of bands and reference maps, and the v1 layout's label JSON."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from ben_builder.archive import REFMAP_RESOLUTION_M
from ben_builder.archive.tiff import GeoTiffTemplate, TemplateError, gdal_bytes
from ben_builder.files import write_bytes, write_error

log = logging.getLogger(__name__)


def geotiff_bytes(
    array: np.ndarray, crs: CRS, transform: Affine, compress: str | None = None
) -> bytes:
    """A single-band uint16 GeoTIFF (nodata 0) as GDAL writes it, made in memory.

    Args:
        array: 2-D uint16 array.
        crs: Coordinate reference system.
        transform: Geotransform of the array.
        compress: GDAL compression (``None`` for uncompressed, ``"deflate"`` for reference maps,
            written with ``PREDICTOR=2`` as BigEarthNet v2 publishes them).
    """
    return gdal_bytes(np.asarray(array, dtype=np.uint16), crs, transform, 0, compress)


def write_geotiff(
    path: Path, array: np.ndarray, crs: CRS, transform: Affine, compress: str | None = None
) -> int:
    """Write :func:`geotiff_bytes` to ``path`` atomically (checked, see :func:`write_bytes`).

    Returns:
        1 (one file written).
    """
    return write_bytes(path, geotiff_bytes(array, crs, transform, compress))


def write_unfinished(path: str | Path, *parts: bytes | memoryview) -> int:
    """Write a file of a product not yet marked finished straight to ``path``; return 1.

    A product's patch files count only once its part is written, and a re-run removes an
    unfinished product's files first, so they need no ``.partial`` name and rename (a tile has
    ~100,000 of them: the rename is a large share of their cost). The file's bytes are
    ``parts`` one after the other (bytes-like, one byte per item), written with one
    ``writev``. A failed or short write removes the file.

    Raises:
        ArchiveWriteError: the write failed or was short (ENOSPC, quota, read-only).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise write_error(Path(path), exc) from exc
    try:
        size = sum(len(part) for part in parts)
        written = os.writev(fd, parts) if size else 0
        if written < size:  # a short write: the rest is retried; a full disk raises
            rest = memoryview(b"".join(parts))
            while written < size:
                n = os.write(fd, rest[written:])
                if n == 0:
                    raise OSError(errno.ENOSPC, f"short write ({written} of {size} bytes)")
                written += n
    except OSError as exc:
        os.close(fd)
        with suppress(OSError):
            os.unlink(path)
        raise write_error(Path(path), exc) from exc
    os.close(fd)
    return 1


class BandWriter:
    """Writes the patch GeoTIFFs of one product: uncompressed uint16 bands, deflated maps.

    Uses a GDAL-made byte template per resolution, and one for the 10 m reference maps
    (:mod:`ben_builder.tiff`); if GDAL's layout does not suit a template, those files are written
    through rasterio instead.
    """

    def __init__(self, crs: CRS, resolutions_m: Sequence[int], patch_size_m: int) -> None:
        self.crs = crs
        self.templates: dict[tuple[int, str | None], GeoTiffTemplate] = {}
        kinds = [(res, None) for res in resolutions_m] + [(REFMAP_RESOLUTION_M, "deflate")]
        for res, compress in kinds:
            n = patch_size_m // res
            try:
                self.templates[res, compress] = GeoTiffTemplate.build(
                    (n, n), "uint16", crs, res, compress=compress
                )
            except TemplateError as exc:
                log.warning(
                    "GeoTIFF template (%s m, %s) unavailable (%s); writing through rasterio",
                    res,
                    compress or "uncompressed",
                    exc,
                )

    def _write(
        self, path: Path, arr: np.ndarray, res: int, compress: str | None, ulx: float, uly: float
    ) -> int:
        template = self.templates.get((res, compress))
        if template is None:
            transform = Affine(res, 0.0, ulx, 0.0, -res, uly)
            return write_geotiff(path, arr, self.crs, transform, compress)
        return write_unfinished(path, template.render(arr, ulx, uly))

    def write_band(
        self, files: Sequence[tuple[str, float, float]], blocks: np.ndarray, resolution_m: int
    ) -> int:
        """Write one band of many patches: ``blocks[i]`` to ``files[i] = (path, ulx, uly)``.

        ``blocks`` is ``(files, rows, cols)``. With a template, each file is its header and its
        slice of one contiguous copy of ``blocks``, written side by side: no per-file copies.
        The folders must exist. Returns how many files were written.
        """
        if len(files) != len(blocks):
            raise ValueError(f"{len(files)} files for {len(blocks)} blocks")
        template = self.templates.get((resolution_m, None))
        if template is None or not files:
            for (path, ulx, uly), arr in zip(files, blocks, strict=True):
                self._write(Path(path), arr, resolution_m, None, ulx, uly)
            return len(files)
        if blocks.shape[1:] != template.shape:
            raise ValueError(f"blocks of {blocks.shape[1:]} for a {template.shape} template")
        pixels = np.ascontiguousarray(blocks, dtype=template.dtype)
        size = pixels[0].nbytes
        data = pixels.reshape(-1).view(np.uint8).data
        for i, (path, ulx, uly) in enumerate(files):
            write_unfinished(path, template.header(ulx, uly), data[i * size : (i + 1) * size])
        return len(files)

    def write_refmap(self, path: Path, codes: np.ndarray, ulx: float, uly: float) -> int:
        """Write one patch's 10 m reference map (deflate, ``PREDICTOR=2``); return 1."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return self._write(path, codes, REFMAP_RESOLUTION_M, "deflate", ulx, uly)


def v1_metadata(
    labels43: Sequence[str],
    bounds: tuple[float, float, float, float],
    crs: CRS,
    tile_source: str,
    acquisition_date: str,
) -> dict[str, object]:
    """Content of a v1 ``<patch>_labels_metadata.json``."""
    ulx, uly, lrx, lry = bounds
    return {
        "labels": list(labels43),
        "coordinates": {"ulx": ulx, "uly": uly, "lrx": lrx, "lry": lry},
        "projection": crs.to_wkt(),
        "tile_source": tile_source,
        "acquisition_date": acquisition_date,
    }
