"""Write the archive: per-patch GeoTIFFs in the BigEarthNet layouts and the metadata parquet files.

Every file is written under a ``.partial`` name and renamed into place only when all its bytes
were written, so a killed run or a full disk leaves either no file or a whole one. GeoTIFF output
is deterministic, so a re-run gives byte-identical files.
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from safetensors.numpy import save as safetensors_save

from ben_builder.errors import ArchiveWriteError, OutputLockedError, PreflightError
from ben_builder.tiff import GeoTiffTemplate, TemplateError

log = logging.getLogger(__name__)

S2_DIR = "BigEarthNet-S2"
V1_DIR = "BigEarthNet-v1.0"
S1_DIR = "BigEarthNet-S1"  # empty in an S2-only archive; loaders of the official layout expect it
DB = "BigEarthNet.lmdb"  # rico-hdl's LMDB: written by `encode`, or by the build (layout lmdb)
LABELS43 = "labels43.parquet"
SHARD_SUFFIX = ".mdb"  # a product's LMDB shard in _parts/ (layout lmdb)
# v1 split files as the official v1 models repository and torchgeo name them: "<s2>,<s1>" lines
V1_SPLIT_FILES = {"train": "bigearthnet-train.csv", "validation": "bigearthnet-val.csv",
                  "test": "bigearthnet-test.csv"}  # fmt: skip
REFMAP_DIR = "Reference_Maps"
REFMAP_RESOLUTION_M = 10  # reference maps are at the 10 m grid of the patch
PARTS_DIR = "_parts"
METADATA = "metadata.parquet"
FLAGGED = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
PARTIAL = ".partial"
METADATA_COLUMNS = (
    "patch_id", "labels", "split", "country", "s1_name", "s2v1_name",
    "contains_seasonal_snow", "contains_cloud_or_shadow",
)  # fmt: skip
# The published BigEarthNet v2 parquet types (string, not large_string; s1_name string, not null)
METADATA_SCHEMA = pa.schema(
    [("patch_id", pa.string()), ("labels", pa.list_(pa.string())), ("split", pa.string()),
     ("country", pa.string()), ("s1_name", pa.string()), ("s2v1_name", pa.string()),
     ("contains_seasonal_snow", pa.bool_()), ("contains_cloud_or_shadow", pa.bool_())]
)  # fmt: skip


def atomic_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``."""
    return path.with_name(path.name + PARTIAL)


LOCK_FILE = ".ben_builder.lock"


@contextmanager
def output_lock(root: Path, what: str = "build") -> Iterator[None]:
    """Hold an exclusive lock on an output folder while writing into it.

    The lock is an ``flock`` on ``<root>/.ben_builder.lock``, which names the holder (host, pid,
    start time, what) while it is held. The kernel releases it when the holder exits, however it
    exits, so a lock left by a killed run is never stale: the next run takes it over.

    Raises:
        OutputLockedError: another process holds it (the message names it).
        PreflightError: the folder cannot be created or written.
    """
    import fcntl
    import socket

    path = root / LOCK_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    except OSError as exc:
        raise PreflightError(
            f"{root}: output folder is not writable ({exc.strerror or exc}); choose another "
            "output or fix its permissions"
        ) from exc
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise OutputLockedError(
                f"{root} is in use by {holder}; wait for it to finish or choose another output "
                "folder (two runs writing one archive would corrupt it)"
            ) from exc
        started = datetime.now(UTC).isoformat(timespec="seconds")
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} pid {os.getpid()} on host {socket.gethostname()} since {started}\n")
        fh.flush()
        yield
        fh.truncate(0)  # an idle lock names nobody (and the archive's files match between runs)
    finally:
        fh.close()  # releases the lock


def shard_path(root: Path, product_stem: str) -> Path:
    """A product's LMDB shard (layout ``lmdb``): its patches, merged into ``DB`` at the end."""
    return root / PARTS_DIR / f"{product_stem}{SHARD_SUFFIX}"


#: safetensors headers by (name, dtype, shape) of the arrays: header bytes and tensor order,
#: or None for a set whose value is not its header plus the arrays' bytes (e.g. big-endian)
_SAFETENSORS_LAYOUTS: dict[tuple[tuple[str, np.dtype, tuple[int, ...]], ...],
                           tuple[bytes, tuple[str, ...]] | None] = {}  # fmt: skip
_MAX_SAFETENSORS_LAYOUTS = 64


def safetensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """One LMDB value of rico-hdl's layout: ``arrays`` as safetensors (``encode`` and shards).

    The first value of each set of names, dtypes and shapes is made by safetensors; its header
    (which depends on nothing else) and the order of its tensors are kept when that value is
    exactly the header followed by the arrays' bytes in that order, and the next values of the
    same set are put together from them: the same bytes, without safetensors' per-array work
    (a patch's 12 bands: 110 us -> 21 us here). A set that fails that check is remembered and
    always made by safetensors. Views (patch blocks) are copied dense.
    """
    key = tuple((name, a.dtype, a.shape) for name, a in arrays.items())
    known = _SAFETENSORS_LAYOUTS.get(key)
    if known is not None:
        return _joined(*known, arrays)
    dense = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    value = safetensors_save(dense)
    if key not in _SAFETENSORS_LAYOUTS and len(_SAFETENSORS_LAYOUTS) < _MAX_SAFETENSORS_LAYOUTS:
        _SAFETENSORS_LAYOUTS[key] = _safetensors_layout(value, dense)
    return value


def _joined(header: bytes, order: tuple[str, ...], arrays: Mapping[str, np.ndarray]) -> bytes:
    """A safetensors header followed by the arrays' bytes, in its order."""
    return b"".join([header, *(arrays[name].tobytes() for name in order)])


def _safetensors_layout(
    value: bytes, arrays: dict[str, np.ndarray]
) -> tuple[bytes, tuple[str, ...]] | None:
    """Header and tensor order of a safetensors ``value``, if it is them plus the arrays' bytes."""
    size = int.from_bytes(value[:8], "little")
    try:
        entries = json.loads(value[8 : 8 + size])
        order = tuple(sorted(arrays, key=lambda name: entries[name]["data_offsets"][0]))
    except (ValueError, KeyError, TypeError):
        return None
    header = value[: 8 + size]
    return (header, order) if _joined(header, order, arrays) == value else None


SHARD_MAP_SIZE = 1 << 33  # 8 GiB of address space (a tile's ~8,300 patches need ~1.6 GB)


class ShardWriter:
    """Writes one product's patches to its LMDB shard, under a temporary name until closed.

    Keys and values are those of rico-hdl's layout (``<patch>``: safetensors of the bands at
    their native sizes; ``<patch>_reference_map``: ``{"Data": CLC codes}``), the same bytes
    ``encode`` writes from the GeoTIFFs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = atomic_path(path)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            self.tmp.unlink()
        self.env = lmdb.open(str(self.tmp), subdir=False, lock=False, map_size=SHARD_MAP_SIZE)
        self.txn = self.env.begin(write=True)
        self.entries = 0

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store ``arrays`` (safetensors) under ``key``."""
        self.txn.put(key.encode(), safetensors_bytes(arrays))
        self.entries += 1

    def close(self, ok: bool = True) -> None:
        """Commit and move into place (``ok``), or drop the shard."""
        try:
            if ok:
                self.txn.commit()
                self.env.sync(True)
            else:
                self.txn.abort()
        finally:
            self.env.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def shard_writer(path: Path | None) -> Iterator[ShardWriter | None]:
    """A :class:`ShardWriter` for ``path`` (None: no shard), kept only if the block succeeds."""
    if path is None:
        yield None
        return
    shard = ShardWriter(path)
    try:
        yield shard
    except BaseException:
        shard.close(ok=False)
        raise
    shard.close()


def merge_shards(root: Path) -> int:
    """Merge every product's shard into ``<root>/BigEarthNet.lmdb``, keys in sorted order.

    Written anew each time (under a temporary name, then renamed), one transaction in key
    order, so the same shards always give the same file. Returns the number of entries.
    """
    shards = sorted((root / PARTS_DIR).glob(f"*{SHARD_SUFFIX}"))
    envs = [lmdb.open(str(p), subdir=False, lock=False, readonly=True) for p in shards]
    db = root / DB
    tmp = atomic_path(db)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        size = sum(p.stat().st_size for p in shards) * 2 + (1 << 24)
        out = lmdb.open(str(tmp), map_size=size)
        try:
            txns = [e.begin(buffers=False) for e in envs]
            entries = 0
            with out.begin(write=True) as w:
                for key, value in heapq.merge(*(t.cursor().iternext() for t in txns)):
                    w.put(key, value, append=True)  # keys arrive sorted
                    entries += 1
            for t in txns:
                t.abort()
            out.sync(True)
        finally:
            out.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for e in envs:
            e.close()
    if db.exists():
        shutil.rmtree(db)
    os.replace(tmp, db)
    return entries


def remove_product(root: Path, product_stem: str) -> int:
    """Remove everything a product wrote to the archive; return how many files were removed.

    The part (the product's completion mark) goes first, so an interruption here leaves the
    product unfinished, never finished with files missing. v1 folders are found from the part's
    ``s2v1_name`` column.
    """
    part = part_path(root, product_stem)
    count = 0
    v1_names: list[str] = []
    if part.exists():
        with suppress(OSError, ValueError, KeyError, pa.ArrowException):
            v1_names = [str(n) for n in pq.read_table(part, columns=["s2v1_name"]).column(0)
                        .to_pylist() if n]  # fmt: skip
        part.unlink()
        count += 1
    summary = part.with_suffix(".json")
    if summary.exists():
        summary.unlink()
        count += 1
    for shard in (shard_path(root, product_stem), atomic_path(shard_path(root, product_stem))):
        if shard.exists():
            shard.unlink()
            count += 1
    folders = [root / S2_DIR / product_stem, root / REFMAP_DIR / product_stem]
    folders += [root / V1_DIR / n for n in v1_names]
    for folder in folders:
        if folder.is_dir():
            count += sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder)
    return count


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
    # deflate with horizontal differencing (PREDICTOR=2), as the published reference maps are
    opts: dict[str, object] = {"compress": compress, "predictor": 2} if compress else {}
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
            dtype="uint16", crs=crs, transform=transform, nodata=0, **opts,
        ) as ds:  # fmt: skip
            ds.write(array, 1)
        return bytes(mem.read())


def write_geotiff(
    path: Path, array: np.ndarray, crs: CRS, transform: Affine, compress: str | None = None
) -> int:
    """Write :func:`geotiff_bytes` to ``path`` atomically (checked, see :func:`write_bytes`).

    Returns:
        1 (one file written).
    """
    return write_bytes(path, geotiff_bytes(array, crs, transform, compress))


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (sorted keys, so output is deterministic)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(path: Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> None:
    """Write a parquet file atomically (with ``schema``: exactly these Arrow types).

    Raises:
        ArchiveWriteError: the write failed (e.g. a full disk); ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(path, sink.getvalue().to_pybytes())


def patch_dir(root: Path, product_stem: str, patch_id: str) -> Path:
    """Folder of one patch's band files in the v2 layout."""
    return root / S2_DIR / product_stem / patch_id


def refmap_path(root: Path, product_stem: str, patch_id: str) -> Path:
    """Path of one patch's reference map in the v2 layout."""
    return root / REFMAP_DIR / product_stem / patch_id / f"{patch_id}_reference_map.tif"


def part_path(root: Path, product_stem: str) -> Path:
    """Per-product metadata part; its presence marks the product as finished."""
    return root / PARTS_DIR / f"{product_stem}.parquet"


def write_bytes(path: Path, data: bytes) -> int:
    """Write ``data`` to ``path`` atomically, replacing an older file; return 1.

    The bytes go to ``<path>.partial`` and are renamed only when every byte was written, so a
    full disk never leaves a short file under the final name.

    Raises:
        ArchiveWriteError: the write failed or was short (ENOSPC, quota, read-only); the partial
            file is removed.
    """
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as fh:
            written = fh.write(data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise _write_error(path, exc) from exc
    return 1


def write_unfinished(path: str | Path, *parts: bytes | memoryview) -> int:
    """Write a file of a product not yet marked finished straight to ``path``; return 1.

    A product's patch files count only once its part is written, and a re-run removes an
    unfinished product's files first, so they need no ``.partial`` name and rename (writing a
    tile's ~99,000 files on one core took 9.7 s instead of 13.9 s). The file's bytes are
    ``parts`` one after the other (bytes-like, one byte per item), written with one
    ``writev``. A failed or short write removes the file.

    Raises:
        ArchiveWriteError: the write failed or was short (ENOSPC, quota, read-only).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise _write_error(Path(path), exc) from exc
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
        raise _write_error(Path(path), exc) from exc
    os.close(fd)
    return 1


def _write_error(path: Path, exc: OSError) -> ArchiveWriteError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):  # a folder vanished under the run
        hint = "its folder was removed while the run wrote into it; run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the output folder is not writable; fix its permissions or choose another one"
    else:
        hint = "free space on that disk or choose another output folder, then run again"
    return ArchiveWriteError(f"{path}: cannot write ({exc.strerror or exc}); {hint}")


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
                log.warning("GeoTIFF template (%s m, %s) unavailable (%s); writing through "
                            "rasterio", res, compress or "uncompressed", exc)  # fmt: skip

    def _write(self, path: Path, arr: np.ndarray, res: int, compress: str | None, ulx: float,
               uly: float) -> int:  # fmt: skip
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


def read_parts(root: Path) -> pd.DataFrame:
    """All per-product metadata parts of an archive, sorted by ``patch_id``."""
    parts = sorted((root / PARTS_DIR).glob("*.parquet"))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in METADATA_COLUMNS})
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values("patch_id", kind="stable").reset_index(drop=True)


def finalize(
    root: Path,
    adjust: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    layout: str = "v2",
) -> dict[str, int]:
    """Combine the per-product parts into ``metadata.parquet`` and the flagged-patches parquet.

    Rows are sorted by ``patch_id`` so the output does not depend on the order products finished.
    The folders and files the official releases have beside the patches are written too, so
    loaders of the official layout (torchgeo's ``BigEarthNetV2`` and ``BigEarthNet``) read the
    archive as it is: an (empty) ``BigEarthNet-S1/`` for v2, and the v1 split files
    ``bigearthnet-{train,val,test}.csv`` for v1 (``<s2v1_name>,<s1_name>`` per line, patches of
    ``metadata.parquet`` only, as v1's lists left the cloudy and snowy patches out).

    Args:
        root: Archive root.
        adjust: Optional function applied to the combined frame (flags from lists, countries).
        layout: ``v2``, ``v1``, ``both`` or ``lmdb`` (which side files to write; ``lmdb``
            merges the products' shards into ``BigEarthNet.lmdb`` and adds ``labels43.parquet``,
            so the archive is what ``encode`` would make of a v2 build).

    Returns:
        Row counts: ``{"metadata": n, "flagged": m}``.
    """
    frame = read_parts(root)
    if adjust is not None:
        frame = adjust(frame)
    if "flagged" in frame:
        flagged_mask = frame["flagged"].astype(bool)
    else:
        flagged_mask = pd.Series(False, index=frame.index)
    cols = list(METADATA_COLUMNS)
    for name, rows in ((METADATA, ~flagged_mask), (FLAGGED, flagged_mask)):
        write_parquet(root / name, frame.loc[rows, cols].reset_index(drop=True), METADATA_SCHEMA)
    if layout in ("v2", "both"):
        (root / S1_DIR).mkdir(exist_ok=True)
    if layout == "lmdb":  # the archive is the encoded folder: LMDB, parquets, labels43
        merge_shards(root)
        labels43 = frame[["patch_id", "labels43"]] if "labels43" in frame else None
        if labels43 is not None:
            write_parquet(root / LABELS43, labels43.reset_index(drop=True))
    if layout in ("v1", "both"):
        kept = frame.loc[~flagged_mask & frame["s2v1_name"].notna()]
        for split, name in V1_SPLIT_FILES.items():
            chosen = kept[kept["split"] == split].sort_values("s2v1_name")
            pairs = zip(chosen["s2v1_name"], chosen["s1_name"], strict=True)
            lines = [f"{v1},{s1 if isinstance(s1, str) else ''}\n" for v1, s1 in pairs]
            write_bytes(root / name, "".join(lines).encode())
    return {"metadata": int((~flagged_mask).sum()), "flagged": int(flagged_mask.sum())}
