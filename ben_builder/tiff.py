"""Fast writing of many small, identically shaped GeoTIFFs from a GDAL-made byte template.

GDAL writes an uncompressed single-band GeoTIFF of a given size, dtype and CRS with the same bytes
whatever its origin, except for the two doubles of the ModelTiepoint tag that hold the upper-left
corner, and the pixel block. A template made by GDAL (through rasterio) is therefore a correct
writer for every patch of a product: copy it, put the corner into the tiepoint and the pixels
into the strip block. Opening a GDAL dataset per file costs about 0.7 ms; this costs a few
microseconds plus the file system, which matters for the ~100,000 files of a tile.

The template checks itself when built: a second GDAL file at another origin must differ from
the template only inside the tiepoint doubles. If it does not (another GDAL layout), building
the template fails and callers fall back to plain rasterio writes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

TAG_STRIP_OFFSETS = 273
TAG_STRIP_BYTE_COUNTS = 279
TAG_MODEL_TIEPOINT = 33922
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


class TemplateError(ValueError):
    """GDAL's output does not have the layout the template writer relies on."""


def _gdal_bytes(
    shape: tuple[int, int], dtype: str, crs: CRS, transform: Affine, nodata: float | None
) -> bytes:
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", width=shape[1], height=shape[0], count=1, dtype=dtype,
                      crs=crs, transform=transform, nodata=nodata) as ds:  # fmt: skip
            ds.write(np.ones(shape, dtype), 1)  # zeros would make GDAL pad the last strip
        return bytes(mem.read())


def _ifd_values(buf: bytes, tag: int) -> tuple[int, int, int]:
    """``(type, count, offset of the values)`` of ``tag`` in the first IFD of a classic TIFF."""
    if buf[:4] != b"II*\x00":
        raise TemplateError("not a little-endian classic TIFF")
    (ifd,) = struct.unpack_from("<I", buf, 4)
    (n,) = struct.unpack_from("<H", buf, ifd)
    for i in range(n):
        entry = ifd + 2 + 12 * i
        t, typ, count = struct.unpack_from("<HHI", buf, entry)
        if t == tag:
            size = _TYPE_SIZES[typ] * count
            pos = entry + 8 if size <= 4 else struct.unpack_from("<I", buf, entry + 8)[0]
            return typ, count, pos
    raise TemplateError(f"TIFF tag {tag} not found")


def _read_ints(buf: bytes, typ: int, count: int, pos: int) -> list[int]:
    fmt = {3: "H", 4: "I"}.get(typ)
    if fmt is None:
        raise TemplateError(f"unexpected integer tag type {typ}")
    return list(struct.unpack_from(f"<{count}{fmt}", buf, pos))


@dataclass(frozen=True)
class GeoTiffTemplate:
    """Byte template for GeoTIFFs of one size, dtype, CRS and pixel size."""

    template: bytes
    tiepoint_pos: int
    data_pos: int
    shape: tuple[int, int]
    dtype: np.dtype

    @classmethod
    def build(
        cls, shape: tuple[int, int], dtype: str, crs: CRS, resolution_m: float,
        nodata: float | None = 0,
    ) -> GeoTiffTemplate:  # fmt: skip
        """Make and self-check a template with GDAL.

        Raises:
            TemplateError: GDAL's layout is not origin-independent outside the tiepoint.
        """
        t0 = Affine(resolution_m, 0, 0.0, 0, -resolution_m, 0.0)
        t1 = Affine(resolution_m, 0, 123456.0, 0, -resolution_m, 7654321.0)
        a, b = (
            _gdal_bytes(shape, dtype, crs, t0, nodata),
            _gdal_bytes(shape, dtype, crs, t1, nodata),
        )
        typ, count, tie = _ifd_values(a, TAG_MODEL_TIEPOINT)
        if typ != 12 or count != 6:
            raise TemplateError("ModelTiepoint is not 6 doubles")
        if len(a) != len(b):
            raise TemplateError("file size depends on the origin")
        diff = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
        if diff.size and (diff.min() < tie + 24 or diff.max() >= tie + 40):
            raise TemplateError("bytes outside the tiepoint depend on the origin")
        offsets = _read_ints(a, *_ifd_values(a, TAG_STRIP_OFFSETS))
        counts = _read_ints(a, *_ifd_values(a, TAG_STRIP_BYTE_COUNTS))
        nbytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
        contiguous = all(o + c == n for o, c, n in zip(offsets, counts, offsets[1:], strict=False))
        if not contiguous or sum(counts) != nbytes or offsets[0] + nbytes > len(a):
            raise TemplateError("strips are not one contiguous uncompressed block")
        return cls(a, tie, offsets[0], shape, np.dtype(dtype).newbyteorder("<"))

    def render(self, array: np.ndarray, ulx: float, uly: float) -> bytes:
        """The GeoTIFF bytes of ``array`` with upper-left corner ``(ulx, uly)``."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} != template shape {self.shape}")
        buf = bytearray(self.template)
        struct.pack_into("<dd", buf, self.tiepoint_pos + 24, ulx, uly)
        data = np.ascontiguousarray(array, dtype=self.dtype).tobytes()
        buf[self.data_pos : self.data_pos + len(data)] = data
        return bytes(buf)


@dataclass(frozen=True)
class RawLayout:
    """The byte layout of a single-band striped GeoTIFF, learnt from one file tifffile decoded.

    Reading a patch file through a TIFF library costs ~0.5-1 ms, mostly parsing; the encoder
    reads 13 files per patch. Files written alike (all patches of one product and band size)
    share every byte before their pixel strips except the tiepoint's corner and, when
    compressed, the strip offsets and sizes. A file with the same header bytes outside those
    values has the same tags (size, type, compression, predictor, rows per strip), so its strips
    are cut out by the offsets and sizes it holds and decoded by the learnt file's own tifffile
    decoder (none for uncompressed strips: ``np.frombuffer``). A file that differs in any other
    byte is not read here.
    """

    header: bytes  # the learnt file's bytes before its strips
    offsets: tuple[int, int, int]  # (type, count, position) of StripOffsets
    counts: tuple[int, int, int]  # (type, count, position) of StripByteCounts
    shape: tuple[int, int]
    dtype: np.dtype
    decode: Any  # tifffile's decoder for the learnt page; None: uncompressed
    shared: tuple[tuple[int, int], ...]  # header ranges outside the values that vary per file

    @classmethod
    def learn(cls, buf: bytes, pixels: np.ndarray, page: Any) -> RawLayout | None:
        """The layout of ``buf`` (whose tifffile page and decoded pixels are given), or None.

        None unless the strips are contiguous, follow every other byte of the file, and decode
        through this layout to exactly ``pixels``.
        """
        try:
            off = _ifd_values(buf, TAG_STRIP_OFFSETS)
            cnt = _ifd_values(buf, TAG_STRIP_BYTE_COUNTS)
        except (TemplateError, struct.error, KeyError):
            return None
        strips_at = _read_ints(buf, *off)[0]
        holes = [(pos, pos + _TYPE_SIZES[typ] * count) for typ, count, pos in (off, cnt)]
        try:
            tie = _ifd_values(buf, TAG_MODEL_TIEPOINT)[2]
            holes.append((tie + 24, tie + 40))  # the corner (x, y) of the tiepoint
        except TemplateError:
            pass
        shared, start = [], 0
        for a, b in sorted(holes):
            shared += [(start, a)] if a > start else []
            start = max(start, b)
        shared.append((start, strips_at))
        decode = page.decode if int(page.compression) != 1 else None
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        layout = cls(bytes(buf[:strips_at]), off, cnt, shape, pixels.dtype.newbyteorder("<"),
                     decode, tuple(shared))  # fmt: skip
        got = layout.read(buf)
        return layout if got is not None and np.array_equal(got, pixels) else None

    def _same_header(self, buf: bytes) -> bool:
        if len(buf) <= len(self.header):
            return False
        mv, header = memoryview(buf), self.header
        return all(mv[a:b] == header[a:b] for a, b in self.shared)

    def read(self, buf: bytes) -> np.ndarray | None:
        """The pixels of ``buf`` if it has this layout, else None."""
        if not self._same_header(buf):
            return None
        offsets = _read_ints(buf, *self.offsets)
        counts = _read_ints(buf, *self.counts)
        ends = [o + c for o, c in zip(offsets, counts, strict=True)]
        if offsets[0] != len(self.header) or ends[-1] != len(buf) or ends[:-1] != offsets[1:]:
            return None
        if self.decode is None:
            if len(buf) - offsets[0] != self.shape[0] * self.shape[1] * self.dtype.itemsize:
                return None
            return np.frombuffer(buf, self.dtype, offset=offsets[0]).reshape(self.shape)
        out = np.empty(self.shape, self.dtype)
        row = 0
        for index, (o, e) in enumerate(zip(offsets, ends, strict=True)):
            segment = self.decode(buf[o:e], index)[0]
            rows = segment.reshape(-1, self.shape[1])
            out[row : row + len(rows)] = rows
            row += len(rows)
        return out if row == self.shape[0] else None
