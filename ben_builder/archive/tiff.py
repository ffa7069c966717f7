"""Fast writing of many small, identically shaped GeoTIFFs from a GDAL-made byte template.

GDAL writes an uncompressed single-band GeoTIFF of a given size, dtype and CRS with the same bytes
whatever its origin, except for the two doubles of the ModelTiepoint tag that hold the upper-left
corner, and the pixel block. A template made by GDAL (through rasterio) is therefore a correct
writer for every patch of a product: copy it, put the corner into the tiepoint and the pixels
into the strip block. A deflate-compressed file differs besides only in its strips and their
offsets and sizes, so the template compresses the strips itself and fills those in. Opening a
GDAL dataset per file costs about 0.7 ms (1.4 ms with deflate); this costs a few microseconds
(~0.2 ms to deflate a reference map) plus the file system, which matters for the ~100,000
files of a tile.

The template checks itself when built: a second GDAL file at another origin must differ from
the template only inside the tiepoint doubles, and a compressed file made from the template must
read back through GDAL. If not (another GDAL layout), building the template fails and callers
fall back to plain rasterio writes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

TAG_STRIP_OFFSETS = 273
TAG_ROWS_PER_STRIP = 278
TAG_STRIP_BYTE_COUNTS = 279
TAG_MODEL_TIEPOINT = 33922
#: zlib level of the deflated files. GDAL's default is 6; level 1 compresses the same pixels
#: several times faster into files a little larger, which take one file-system block either way
#: (README, "Code layout").
ZLEVEL = 1
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


class TemplateError(ValueError):
    """GDAL's output does not have the layout the template writer relies on."""


def gdal_bytes(
    array: np.ndarray, crs: CRS, transform: Affine, nodata: float | None, compress: str | None
) -> bytes:
    """A single-band GeoTIFF of ``array`` as GDAL writes it, made in memory.

    ``compress``: ``None`` (uncompressed) or a GDAL compression, then with ``PREDICTOR=2``
    (horizontal differencing), as the published reference maps are deflated.
    """
    opts: dict[str, object] = {"compress": compress, "predictor": 2} if compress else {}
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=array.shape[1],
            height=array.shape[0],
            count=1,
            dtype=array.dtype,
            crs=crs,
            transform=transform,
            nodata=nodata,
            **opts,
        ) as ds:
            ds.write(array, 1)
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


def _predict(array: np.ndarray) -> np.ndarray:
    """TIFF horizontal differencing (Predictor 2) of a 2-D integer array, wrapping as TIFF does."""
    out = array.copy()
    out[:, 1:] -= array[:, :-1]
    return out


@dataclass(frozen=True)
class GeoTiffTemplate:
    """Byte template for GeoTIFFs of one size, dtype, CRS, pixel size and compression.

    Uncompressed: the pixels go into GDAL's one contiguous strip block as they are. Deflate (with
    horizontal differencing, as BigEarthNet v2 publishes its reference maps): every strip of
    ``rows_per_strip`` rows is differenced and compressed with zlib (level :data:`ZLEVEL`)
    and the strip offsets and sizes are written into GDAL's header. GDAL's own deflate
    bytes may differ (it can use libdeflate); the pixels read back are the same, which the
    template checks when it is built.
    """

    template: bytes  # GDAL's file; when compressed, only its header (before the strips) is used
    tiepoint_pos: int
    data_pos: int
    shape: tuple[int, int]
    dtype: np.dtype
    compressed: bool = False
    rows_per_strip: int = 0
    offsets_pos: int = 0
    counts_pos: int = 0

    @classmethod
    def build(
        cls,
        shape: tuple[int, int],
        dtype: str,
        crs: CRS,
        resolution_m: float,
        nodata: float | None = 0,
        compress: str | None = None,
    ) -> GeoTiffTemplate:
        """Make and self-check a template with GDAL.

        Args:
            shape: ``(rows, cols)`` of every file.
            dtype: Integer pixel type.
            crs: Coordinate reference system.
            resolution_m: Pixel size.
            nodata: The files' nodata value.
            compress: ``None`` (uncompressed) or ``"deflate"`` (with ``PREDICTOR=2``).

        Raises:
            TemplateError: GDAL's layout is not origin-independent outside the tiepoint, its
                strips are not what this writer makes, or a rendered file does not read back.
        """
        if compress not in (None, "deflate"):
            raise TemplateError(f"compression {compress!r} has no template")
        t0 = Affine(resolution_m, 0, 0.0, 0, -resolution_m, 0.0)
        t1 = Affine(resolution_m, 0, 123456.0, 0, -resolution_m, 7654321.0)
        sample = np.ones(shape, dtype)  # zeros would make GDAL pad the last strip
        sample[:, ::7] = 3  # something to difference and compress
        a, b = (
            gdal_bytes(sample, crs, t0, nodata, compress),
            gdal_bytes(sample, crs, t1, nodata, compress),
        )
        typ, count, tie = _ifd_values(a, TAG_MODEL_TIEPOINT)
        if typ != 12 or count != 6:
            raise TemplateError("ModelTiepoint is not 6 doubles")
        if len(a) != len(b):
            raise TemplateError("file size depends on the origin")
        diff = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
        if diff.size and (diff.min() < tie + 24 or diff.max() >= tie + 40):
            raise TemplateError("bytes outside the tiepoint depend on the origin")
        off_typ, n_strips, off_pos = _ifd_values(a, TAG_STRIP_OFFSETS)
        cnt_typ, _, cnt_pos = _ifd_values(a, TAG_STRIP_BYTE_COUNTS)
        offsets = _read_ints(a, off_typ, n_strips, off_pos)
        counts = _read_ints(a, cnt_typ, n_strips, cnt_pos)
        contiguous = all(o + c == n for o, c, n in zip(offsets, counts, offsets[1:], strict=False))
        if not contiguous or offsets[-1] + counts[-1] != len(a):
            raise TemplateError("strips are not one contiguous block at the end of the file")
        nbytes = shape[0] * shape[1] * np.dtype(dtype).itemsize
        if compress is None:
            if sum(counts) != nbytes:
                raise TemplateError("strips are not one uncompressed block")
            return cls(a, tie, offsets[0], shape, np.dtype(dtype).newbyteorder("<"))
        if (off_typ, cnt_typ) != (4, 4) or n_strips < 1:
            raise TemplateError("strip offsets and sizes are not LONG arrays")
        (rows,) = _read_ints(a, *_ifd_values(a, TAG_ROWS_PER_STRIP))
        if -(-shape[0] // rows) != n_strips:
            raise TemplateError("the strip count does not follow from the rows per strip")
        template = cls(
            a[: offsets[0]],
            tie,
            offsets[0],
            shape,
            np.dtype(dtype).newbyteorder("<"),
            True,
            rows,
            off_pos,
            cnt_pos,
        )
        with MemoryFile(template.render(sample, 123456.0, 7654321.0)) as mem, mem.open() as ds:
            if not np.array_equal(ds.read(1), sample) or ds.transform != t1 or ds.crs != crs:
                raise TemplateError("a file rendered from the template does not read back")
        return template

    def header(self, ulx: float, uly: float) -> bytes:
        """An uncompressed file's bytes before its pixels, for upper-left corner ``(ulx, uly)``.

        The file is this header followed by the pixels, row by row, as :attr:`dtype`. Writing
        the two parts side by side (``os.writev``) spares the copies of :meth:`render`.
        """
        if self.compressed:
            raise TemplateError("a compressed file's header depends on its strips: use render()")
        return bytes(self._head(ulx, uly))

    def _head(self, ulx: float, uly: float) -> bytearray:
        buf = bytearray(self.template[: self.data_pos])
        struct.pack_into("<dd", buf, self.tiepoint_pos + 24, ulx, uly)
        return buf

    def render(self, array: np.ndarray, ulx: float, uly: float) -> bytes:
        """The GeoTIFF bytes of ``array`` with upper-left corner ``(ulx, uly)``."""
        if array.shape != self.shape:
            raise ValueError(f"array shape {array.shape} != template shape {self.shape}")
        pixels = np.ascontiguousarray(array, dtype=self.dtype)
        if not self.compressed:
            return self.header(ulx, uly) + pixels.tobytes()
        buf = self._head(ulx, uly)
        predicted = _predict(pixels)
        rows = self.rows_per_strip
        strips = [
            zlib.compress(predicted[r : r + rows].tobytes(), ZLEVEL)
            for r in range(0, self.shape[0], rows)
        ]
        sizes = [len(s) for s in strips]
        offsets = np.cumsum([self.data_pos, *sizes[:-1]])
        struct.pack_into(f"<{len(strips)}I", buf, self.offsets_pos, *offsets.tolist())
        struct.pack_into(f"<{len(strips)}I", buf, self.counts_pos, *sizes)
        return bytes(buf) + b"".join(strips)


@dataclass(frozen=True)
class RawLayout:
    """The byte layout of a single-band striped GeoTIFF, learnt from one file tifffile decoded.

    Reading a patch file through a TIFF library is mostly parsing; the encoder reads 13 files
    per patch. Files written alike (all patches of one product and band size)
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
    size: int = 0  # uncompressed: every file's size (its strips are where the learnt file's are)
    zlib_predictor: bool = False  # deflate with horizontal differencing: decoded here

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
        uncompressed = int(page.compression) == 1
        # uncompressed files of one layout have the same strips: only the corner varies
        holes = (
            []
            if uncompressed
            else [(pos, pos + _TYPE_SIZES[typ] * count) for typ, count, pos in (off, cnt)]
        )
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
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        deflate = int(page.compression) in (8, 32946)  # Deflate, or Adobe's code for it
        zlib_predictor = deflate and int(page.predictor) == 2 and pixels.dtype.kind in "ui"
        layout = cls(
            bytes(buf[:strips_at]),
            off,
            cnt,
            shape,
            pixels.dtype.newbyteorder("<"),
            None if uncompressed else page.decode,
            tuple(shared),
            len(buf) if uncompressed else 0,
            zlib_predictor,
        )
        if uncompressed and layout._strips(buf) is None:  # checked once, then by the header
            return None
        got = layout.read(buf)
        return layout if got is not None and np.array_equal(got, pixels) else None

    def _same_header(self, buf: bytes) -> bool:
        if len(buf) <= len(self.header):
            return False
        header = self.header
        for a, b in self.shared:  # a loop, not all(...): this runs for every file encoded
            if buf[a:b] != header[a:b]:
                return False
        return True

    def _strips(self, buf: bytes) -> tuple[list[int], list[int]] | None:
        """``(offsets, ends)`` of the strips, if they follow the header and each other."""
        offsets = _read_ints(buf, *self.offsets)
        counts = _read_ints(buf, *self.counts)
        ends = [o + c for o, c in zip(offsets, counts, strict=True)]
        if offsets[0] != len(self.header) or ends[-1] != len(buf) or ends[:-1] != offsets[1:]:
            return None
        return offsets, ends

    def read(self, buf: bytes) -> np.ndarray | None:
        """The pixels of ``buf`` if it has this layout, else None."""
        if self.decode is None:  # the whole header, strip offsets included, was learnt
            if len(buf) != self.size or not self._same_header(buf):
                return None
            if self.size - len(self.header) != self.shape[0] * self.shape[1] * self.dtype.itemsize:
                return None
            return np.frombuffer(buf, self.dtype, offset=len(self.header)).reshape(self.shape)
        if not self._same_header(buf):
            return None
        strips = self._strips(buf)
        if strips is None:
            return None
        offsets, ends = strips
        if self.zlib_predictor:  # one pass over the joined strips: less per-strip overhead
            try:
                pieces = [zlib.decompress(buf[o:e]) for o, e in zip(offsets, ends, strict=True)]
            except zlib.error:
                return None
            data = b"".join(pieces)
            if len(data) != self.shape[0] * self.shape[1] * self.dtype.itemsize:
                return None
            diffs = np.frombuffer(data, self.dtype).reshape(self.shape)
            # undo the differencing: summed in 64 bits, cast back (which wraps as TIFF's sums
            # do); less than half the time of summing in the file's type here
            return np.add.accumulate(diffs, axis=1).astype(self.dtype)
        out = np.empty(self.shape, self.dtype)
        row = 0
        for index, (o, e) in enumerate(zip(offsets, ends, strict=True)):
            segment = self.decode(buf[o:e], index)[0]
            rows = segment.reshape(-1, self.shape[1])
            out[row : row + len(rows)] = rows
            row += len(rows)
        return out if row == self.shape[0] else None
