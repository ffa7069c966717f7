"""Encode a BigEarthNet-v2-layout archive for training, in rico-hdl's layout.

Any archive in the v2 layout encodes, the official download included: the patches are those of
``metadata.parquet`` and ``metadata_for_patches_with_snow_cloud_or_shadow.parquet`` (both, so
loaders can include cloudy and snowy patches), their files are found from the patch names alone
(``BigEarthNet-S2/<product>/<patch>/<patch>_<band>.tif``, ``Reference_Maps/...``), and nothing
of ``_parts/`` is needed.

One LMDB (``BigEarthNet.lmdb``), as rico-hdl writes it and configilm reads it:

- ``<patch>``: safetensors ``{band: uint16 array at the band's native size}`` (B01 ... B12, B8A);
- ``<patch>_reference_map``: safetensors ``{"Data": 120 x 120 uint16 CLC codes}``, when the
  archive has ``Reference_Maps/``;
- ``<s1_name>``: safetensors ``{"VV": float32, "VH": float32}``, when an S1 folder
  (``BigEarthNet-S1/<product>/<s1 patch>/<s1 patch>_VV.tif``) is given.

Beside it: the two metadata parquets (copied unchanged, published schema) and, for archives built
here, ``labels43.parquet`` (patch_id, labels43 from ``_parts/``) for 43-class training. The LMDB
is written under a unique temporary name and renamed when complete; ``encoded_from.json`` (the
archive's fingerprint) comes last and marks the encoding complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import pandas as pd
import tifffile

from ben_builder import __version__, archive, specs
from ben_builder.archive.finalize import finished_products, read_parts
from ben_builder.archive.reader import product_of, read_metadata
from ben_builder.archive.shards import safetensors_bytes
from ben_builder.archive.tiff import RawLayout
from ben_builder.errors import (
    ArchiveWriteError,
    BenBuilderError,
    PreflightError,
    ProductFormatError,
    ProductNotFoundError,
)
from ben_builder.files import PARTIAL, output_lock, reader_lock, write_bytes, write_parquet

log = logging.getLogger(__name__)

DB = archive.DB
LABELS43 = archive.LABELS43
S1_BANDS = ("VH", "VV")
REFMAP_SUFFIX = "_reference_map"


@dataclass(frozen=True)
class EncodeSummary:
    """What an encoding run wrote."""

    patches: int
    db: Path
    reference_maps: int = 0
    s1_patches: int = 0
    skipped: bool = False


def _decode(buf: bytes, path: Path, dtype: type) -> tuple[np.ndarray, Any]:
    """One single-band GeoTIFF's pixels, decoded by tifffile, and its tifffile page.

    Raises:
        ProductFormatError: not a readable TIFF, several bands, or another data type.
    """
    try:
        tif = tifffile.TiffFile(io.BytesIO(buf))  # in memory: kept for the page's decoder
        page = tif.pages.first
        data = page.asarray()
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as exc:
        raise ProductFormatError(f"{path}: not a readable GeoTIFF ({exc})") from exc
    if data.ndim != 2:
        raise ProductFormatError(f"{path}: {data.shape} pixels, expected one band")
    if data.dtype != dtype:
        raise ProductFormatError(f"{path}: {data.dtype} pixels, expected {np.dtype(dtype)}")
    return np.ascontiguousarray(data), page


def _read_file(path: Path | str, size_guess: int = 1 << 16) -> bytes:
    """A file's bytes (a patch file's in one ``read``: cheaper than a buffered file object)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, size_guess)]
        while len(chunks[-1]) == size_guess:  # larger than the guess: read on to the end
            chunks.append(os.read(fd, size_guess))
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class PatchReader:
    """Reads patch GeoTIFFs: a file laid out like one already decoded is cut from its bytes.

    The first file of each layout (a product's band size, its reference maps) is decoded by
    tifffile and its layout learnt (:class:`ben_builder.tiff.RawLayout`); the files that share
    it are read without parsing (uncompressed strips sliced, deflated ones decoded by the learnt
    page's codec). Any other file (another writer, tiled, big-endian) goes through tifffile.
    """

    MAX_LAYOUTS = 32  # per data type: band sizes and reference maps of a few products

    KEY_BYTES = 96  # a GDAL file's first IFD entries (size, type, compression): picks layouts

    def __init__(self) -> None:
        self.layouts: dict[tuple[bytes, str], list[RawLayout]] = {}
        self.raw = self.decoded = 0

    def __call__(self, path: Path | str, dtype: type) -> np.ndarray:
        """The pixels of ``path``.

        Raises:
            ProductNotFoundError: the file is missing.
            ProductFormatError: not a readable single-band TIFF of ``dtype``.
        """
        try:
            buf = _read_file(path)
        except FileNotFoundError as exc:
            raise ProductNotFoundError(
                f"{path}: missing; the archive is incomplete (every patch of the metadata needs "
                "its files)"
            ) from exc
        known = self.layouts.setdefault((buf[: self.KEY_BYTES], dtype.__name__), [])
        for i, layout in enumerate(known):
            data = layout.read(buf)
            if data is not None:
                self.raw += 1
                if i:  # most recently used first
                    known.insert(0, known.pop(i))
                return data
        data, page = _decode(buf, Path(path), dtype)
        self.decoded += 1
        learnt = RawLayout.learn(buf, data, page)
        if learnt is not None:
            known.insert(0, learnt)
            del known[self.MAX_LAYOUTS :]
        return data


#: Patches per reading task and LMDB transaction (~12 MB of values). Smaller chunks keep the
#: encoder's memory small: fewer fresh pages to fault in for each chunk (``make bench-encode``).
CHUNK = 64


@dataclass(frozen=True)
class _Job:
    """What a reading task needs: the folders (as strings; no open handles cross processes)."""

    s2_root: str
    refmap_root: str | None
    s1_folders: dict[str, str]


@dataclass(frozen=True)
class _ChunkResult:
    items: list[tuple[bytes, bytes]]
    patches: int
    refmaps: int
    s1: int
    raw: int
    decoded: int


_READER: PatchReader | None = None  # one per process: its learnt layouts serve every chunk


def _encode_chunk(job: _Job, rows: list[tuple[str, str | None]]) -> _ChunkResult:
    """The LMDB items of some patches: bands, reference map, S1 bands."""
    global _READER
    if _READER is None:
        _READER = PatchReader()
    read = _READER
    raw, decoded = read.raw, read.decoded
    bands = [b.name for b in specs.bands().bands]
    items: list[tuple[bytes, bytes]] = []
    refmaps = s1 = 0
    for patch_id, s1_name in rows:
        product = product_of(patch_id)
        folder = os.path.join(job.s2_root, product, patch_id, patch_id)
        arrays = {b: read(f"{folder}_{b}.tif", np.uint16) for b in bands}
        items.append((patch_id.encode(), safetensors_bytes(arrays)))
        if job.refmap_root is not None:
            ref = read(archive.refmap_path(Path(job.refmap_root), product, patch_id), np.uint16)
            items.append((f"{patch_id}{REFMAP_SUFFIX}".encode(), safetensors_bytes({"Data": ref})))
            refmaps += 1
        if s1_name is not None:
            base = os.path.join(job.s1_folders[s1_name], s1_name)
            s1_arrays = {b: read(f"{base}_{b}.tif", np.float32) for b in S1_BANDS}
            items.append((s1_name.encode(), safetensors_bytes(s1_arrays)))
            s1 += 1
    return _ChunkResult(items, len(rows), refmaps, s1, read.raw - raw, read.decoded - decoded)


@contextmanager
def _chunk_results(
    job: _Job, chunks: list[list[tuple[str, str | None]]], workers: int
) -> Iterator[Iterator[_ChunkResult]]:
    """Chunk results in order, read in this process or by ``workers`` processes."""
    if workers == 1:
        yield (_encode_chunk(job, c) for c in chunks)
        return
    # spawned, not forked: the caller may hold threads (Dask, tqdm) that fork would copy
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        yield pool.map(_encode_chunk, [job] * len(chunks), chunks)


def _s1_folders(s1_root: Path) -> dict[str, Path]:
    """S1 patch name -> folder (``BigEarthNet-S1/<product>/<patch>/``)."""
    return {p.name: p for p in sorted(s1_root.glob("*/*")) if p.is_dir()}


ENCODED_FROM = "encoded_from.json"  # what the encoding was made of; written last: complete


def encode_archive(
    root: Path,
    out: Path,
    s1_root: Path | None = None,
    on_patch: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> EncodeSummary:
    """Encode every patch of an archive's metadata (recommended and flagged) into one LMDB.

    Args:
        root: Archive root (``metadata.parquet``, ``BigEarthNet-S2/``, optional
            ``Reference_Maps/``).
        out: Output folder (the LMDB and the metadata beside it).
        s1_root: A ``BigEarthNet-S1`` folder whose patches each ``s1_name`` names; default: the
            archive's own ``BigEarthNet-S1/`` when it holds any.
        on_patch: Called with the number of patches encoded (progress).
        workers: Reading processes (default 1: on the 2-core build machine, two processes were
            slower on the demo's 1,922 patches, the LMDB writes of this process being the
            limit); the LMDB is written by this one, in the metadata's order, so the output does
            not depend on it.

    The output is a function of the archive: its fingerprint (:func:`archive_fingerprint`) is
    recorded in ``encoded_from.json``, written last; a re-run with the same fingerprint does
    nothing, any other re-encodes. The archive is read under its lock (shared: a build cannot
    start meanwhile), the output written under its own (exclusive). The LMDB is byte-identical
    across runs of one archive.

    Raises:
        OutputLockedError: a build is writing the archive, or another encode the output.
        PreflightError: the archive is unfinished (its build was interrupted), or ``out`` is
            the archive itself.
        ArchiveWriteError: not enough space (the message says how much is needed); nothing
            partial is left.
    """
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve():
        raise PreflightError(f"{out}: encode into another folder than the archive itself")
    with reader_lock(root), output_lock(out, "ben-builder encode"):
        return _encode(root, out, s1_root, on_patch, workers)


def _encode(
    root: Path,
    out: Path,
    s1_root: Path | None,
    on_patch: Callable[[int], None] | None,
    workers: int | None,
) -> EncodeSummary:
    meta = read_metadata(root)
    parts = check_finished(root, meta)
    db = out / DB
    s2_root = _s2_root(root)
    own_s1 = root / archive.S1_DIR
    if s1_root is None and own_s1.is_dir() and any(own_s1.iterdir()):
        s1_root = own_s1  # the archive's own S1 half (a reproduction with s1)
    has_refmaps = (root / archive.REFMAP_DIR).is_dir()
    fingerprint = archive_fingerprint(root, s1_root, has_refmaps)
    recorded = out / ENCODED_FROM
    if db.exists() and _read_json(recorded) == fingerprint:
        log.info("%s already encoded from this archive", out)
        return EncodeSummary(len(meta), db, skipped=True)
    s1 = _s1_folders(s1_root) if s1_root is not None else {}
    if s1_root is not None and not s1:
        raise ProductNotFoundError(f"{s1_root}: no <product>/<patch>/ folders of S1 patches")
    rows = _rows(meta, s1_root, s1)
    recorded.unlink(missing_ok=True)  # from here on the output is not this archive's encoding
    for stale in out.glob(f".{DB}*{PARTIAL}"):  # left by a killed encode (the lock is ours)
        shutil.rmtree(stale, ignore_errors=True)
    need = _bytes_needed(len(rows), has_refmaps, sum(r[1] is not None for r in rows))
    free = shutil.disk_usage(out).free
    if free < need:
        raise ArchiveWriteError(_space_message(out, need, free, "not enough space"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{DB}.", suffix=PARTIAL, dir=out))
    job = _Job(str(s2_root), str(root) if has_refmaps else None, {n: str(p) for n, p in s1.items()})
    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    workers = max(1, min(workers or 1, len(chunks)))
    try:
        counts = _write_db(tmp, need, job, chunks, workers, on_patch)
    except BenBuilderError:  # a bad archive (a file missing or unreadable), not the disk
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (lmdb.Error, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(out).free
        why = f"{exc}: a full disk, a quota or a file-size limit"  # LMDB drops the errno
        raise ArchiveWriteError(_space_message(out, need, free, why)) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "%s: %d files read raw, %d decoded by tifffile, %d process(es)",
        out,
        counts["raw"],
        counts["decoded"],
        workers,
    )
    if db.exists():
        shutil.rmtree(db)
    os.replace(tmp, db)
    _copy_metadata(root, out, meta, parts)
    write_bytes(recorded, (json.dumps(fingerprint, indent=2, sort_keys=True) + "\n").encode())
    return EncodeSummary(len(meta), db, counts["refmaps"], counts["s1"])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def archive_fingerprint(root: Path, s1_root: Path | None, has_refmaps: bool) -> dict[str, Any]:
    """What an encoding of ``root`` is made of.

    The metadata parquets' content, the recorded fingerprint of every finished product (its
    files, the CLC, the specs, the options and the software version, :mod:`.provenance`), the
    S1 folder and whether reference maps are encoded, and this software's version. The files of
    a published release (no ``_parts/``) are taken as they are: it is fixed once published.
    """
    meta = {
        name: hashlib.sha256((root / name).read_bytes()).hexdigest()
        for name in (archive.METADATA, archive.FLAGGED)
        if (root / name).exists()
    }
    products = {
        stem: (_read_json(archive.part_path(root, stem).with_suffix(".json")) or {}).get(
            "fingerprint"
        )
        for stem in finished_products(root)
    }
    return {
        "software": __version__,
        "metadata_sha256": meta,
        "products": products,
        "s1_root": str(s1_root.resolve()) if s1_root is not None else None,
        "reference_maps": has_refmaps,
    }


def check_finished(root: Path, meta: pd.DataFrame) -> pd.DataFrame | None:
    """Refuse an archive built here whose metadata is not its products' (build interrupted).

    An archive with ``_parts/`` is finished when its two metadata parquets hold exactly the
    finished products' patches; a build killed in finalisation leaves them otherwise.

    Returns:
        The products' rows (their parts), or None for an archive not built here.

    Raises:
        PreflightError: the parquets and the products disagree (names one patch).
    """
    if not finished_products(root):
        return None
    flagged = root / archive.FLAGGED
    if not flagged.exists():
        raise PreflightError(
            f"{flagged}: missing; the archive's build did not finish. Run build again, then encode"
        )
    rows = read_parts(root)
    built, listed = set(rows["patch_id"]), set(meta["patch_id"])
    if built != listed:
        odd = sorted(built ^ listed)[0]
        where = "in the metadata but no product's" if odd in listed else "of a product, not in"
        raise PreflightError(
            f"{root}: patch {odd} is {where} the metadata parquets; the archive's build did "
            "not finish. Run build again, then encode"
        )
    return rows


def _bytes_needed(patches: int, refmaps: bool, s1_patches: int) -> int:
    """About the LMDB's size: every band's pixels, reference maps and S1 bands, plus 10%."""
    per_patch = sum(2 * b.size_px**2 for b in specs.bands().bands)
    per_patch += 2 * 120 * 120 if refmaps else 0
    return int(1.1 * (patches * per_patch + s1_patches * len(S1_BANDS) * 4 * 120 * 120))


def _space_message(out: Path, need: int, free: int, why: str) -> str:
    return (
        f"{out}: cannot write {DB} ({why}); it needs about {need / 1e6:,.0f} MB and "
        f"{free / 1e6:,.0f} MB are free there: free space or choose another --out"
    )


def _write_db(
    path: Path,
    need: int,
    job: _Job,
    chunks: list[list[tuple[str, str | None]]],
    workers: int,
    on_patch: Callable[[int], None] | None,
) -> dict[str, int]:
    """Write the LMDB at ``path``: chunks read in ``workers`` processes, written in order.

    Each chunk's values go in one transaction; the file is synced once at the end.

    ``meminit``: LMDB zeroes the unused bytes of each page, so two runs write the same bytes
    (without it, the file carried whatever memory held, in 3% of its bytes).
    """
    counts = dict.fromkeys(("refmaps", "s1", "raw", "decoded"), 0)
    env = lmdb.open(str(path), map_size=2 * need + (64 << 20), meminit=True, sync=False)
    try:
        with _chunk_results(job, chunks, workers) as results:
            for result in results:
                with env.begin(write=True) as txn:
                    for key, value in result.items:
                        txn.put(key, value)
                counts["refmaps"] += result.refmaps
                counts["s1"] += result.s1
                counts["raw"] += result.raw
                counts["decoded"] += result.decoded
                if on_patch is not None:
                    on_patch(result.patches)
        env.sync(True)
    finally:
        env.close()
    return counts


def _s2_root(root: Path) -> Path:
    """The archive's ``BigEarthNet-S2/`` folder, or an error that says what ``root`` is."""
    s2_root = root / archive.S2_DIR
    if s2_root.is_dir():
        return s2_root
    if (root / DB).exists():
        raise ProductNotFoundError(
            f"{s2_root}: not found; {root} was built with layout lmdb and is already encoded "
            f"(train on it directly: encoded: {root})"
        )
    raise ProductNotFoundError(f"{s2_root}: not found; is {root} a BigEarthNet-v2 archive?")


def _rows(
    meta: pd.DataFrame, s1_root: Path | None, s1: dict[str, Path]
) -> list[tuple[str, str | None]]:
    """``(patch_id, s1_name or None)`` of every patch, each named S1 patch found first."""
    use_s1 = s1_root is not None and "s1_name" in meta
    s1_names = meta["s1_name"] if use_s1 else pd.Series(None, index=meta.index, dtype=object)
    rows: list[tuple[str, str | None]] = [
        (str(patch_id), s1_name if isinstance(s1_name, str) and s1_name else None)
        for patch_id, s1_name in zip(meta["patch_id"], s1_names, strict=True)
    ]
    for patch_id, s1_name in rows:
        if s1_name is not None and s1_name not in s1:
            raise ProductNotFoundError(
                f"{s1_root}: no folder for S1 patch {s1_name} (s1_name of {patch_id})"
            )
    return rows


def _copy_metadata(root: Path, out: Path, meta: pd.DataFrame, parts: pd.DataFrame | None) -> None:
    """The metadata beside the LMDB: ``labels43.parquet`` (from ``parts``), then the parquets."""
    if parts is not None:
        labels43 = parts[["patch_id", "labels43"]]
        labels43 = labels43[labels43["patch_id"].isin(set(meta["patch_id"]))]
        write_parquet(out / LABELS43, labels43.sort_values("patch_id"))
    else:
        (out / LABELS43).unlink(missing_ok=True)
    for name in (archive.FLAGGED, archive.METADATA):
        if (root / name).exists():
            write_bytes(out / name, (root / name).read_bytes())
        else:
            (out / name).unlink(missing_ok=True)
