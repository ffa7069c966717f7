"""Finishing an archive: the products' parts combined into the metadata parquets and side files."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ben_builder.archive import (
    DB,
    FLAGGED,
    LABELS43,
    METADATA,
    METADATA_COLUMNS,
    METADATA_SCHEMA,
    PARTS_DIR,
    REFMAP_DIR,
    S1_DIR,
    S2_DIR,
    SHARD_SUFFIX,
    V1_DIR,
    V1_SPLIT_FILES,
    part_path,
    shard_path,
)
from ben_builder.archive.shards import merge_shards
from ben_builder.errors import PreflightError
from ben_builder.files import PARTIAL, atomic_path, write_bytes, write_parquet

log = logging.getLogger(__name__)


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
            v1_names = [
                str(n)
                for n in pq.read_table(part, columns=["s2v1_name"]).column(0).to_pylist()
                if n
            ]
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


def read_parts(root: Path) -> pd.DataFrame:
    """All per-product metadata parts of an archive, sorted by ``patch_id``."""
    parts = sorted((root / PARTS_DIR).glob("*.parquet"))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in METADATA_COLUMNS})
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.sort_values("patch_id", kind="stable").reset_index(drop=True)


def finalize(
    root: Path,
    frame: pd.DataFrame | None = None,
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
        frame: The combined rows to write, with the run's metadata rules applied (flags from
            lists, countries); default: the parts as they are (:func:`read_parts`).
        layout: ``v2``, ``v1``, ``both`` or ``lmdb`` (which side files to write; ``lmdb``
            merges the products' shards into ``BigEarthNet.lmdb`` and adds ``labels43.parquet``,
            so the archive is what ``encode`` would make of a v2 build).

    Returns:
        Row counts: ``{"metadata": n, "flagged": m}``.
    """
    if frame is None:
        frame = read_parts(root)
    remove_unfinished(root, frame["s2v1_name"].dropna() if "s2v1_name" in frame else ())
    if "flagged" in frame:
        flagged_mask = frame["flagged"].astype(bool)
    else:
        flagged_mask = pd.Series(False, index=frame.index)
    cols = list(METADATA_COLUMNS)
    for name, rows in ((METADATA, ~flagged_mask), (FLAGGED, flagged_mask)):
        write_parquet(root / name, frame.loc[rows, cols].reset_index(drop=True), METADATA_SCHEMA)
    remove_other_layouts(root, layout)
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


def finished_products(root: Path) -> list[str]:
    """The stems of the products the archive holds as finished (their parts), sorted."""
    return sorted(p.stem for p in (root / PARTS_DIR).glob("*.parquet"))


def prune_products(
    root: Path, keep: Callable[[str], bool], max_share: float, force: bool
) -> list[str]:
    """Remove the products no input asks for any more; return their stems.

    Args:
        root: The archive.
        keep: Whether the run's inputs ask for a product stem.
        max_share: The largest share of the archive's products removed without ``force``.
        force: Remove whatever share it is (``build --prune``).

    Raises:
        PreflightError: more than ``max_share`` of the products would go (a mistyped products
            folder must not empty an archive): run with ``--prune`` to remove them.
    """
    held = finished_products(root)
    gone = [stem for stem in held if not keep(stem)]
    if gone and not force and len(gone) > max_share * len(held):
        raise PreflightError(
            f"{len(gone)} of the {len(held)} products in {root} are no longer among the inputs "
            f"(e.g. {gone[0]}); is the products folder or list the right one? Run with --prune "
            "to remove them from the archive"
        )
    for stem in gone:
        removed = remove_product(root, stem)
        for record in (root / PARTS_DIR).glob(f"{stem}.*"):  # its verification and digest
            record.unlink()
            removed += 1
        log.info("removed %s from the archive (%d files): no input asks for it", stem, removed)
    return gone


def remove_unfinished(root: Path, v1_names: Iterable[str]) -> int:
    """Remove what products without a part left behind; return how many files went.

    A product that failed, was cancelled or was killed mid-way has files but no part (its
    completion mark), so no row names them. They go before the metadata is written, so every
    file of the archive belongs to a row (and a full disk gets back their space). Folders of
    ``BigEarthNet-S2/`` and ``Reference_Maps/`` are product stems; v1 folders are the
    ``s2v1_name`` of the finished products' rows (``v1_names``).
    """
    finished = set(finished_products(root))
    keep_v1 = set(v1_names)
    leftovers = [
        folder
        for top, keep in ((S2_DIR, finished), (REFMAP_DIR, finished), (V1_DIR, keep_v1))
        if (root / top).is_dir()
        for folder in sorted((root / top).iterdir())
        if folder.name not in keep
    ]
    parts = root / PARTS_DIR
    if parts.is_dir():  # shards of unfinished products and half-written files
        leftovers += sorted(p for p in parts.glob(f"*{SHARD_SUFFIX}") if p.stem not in finished)
        leftovers += sorted(parts.glob(f"*{PARTIAL}"))
    count = 0
    for path in leftovers:
        if path.is_dir():
            count += sum(1 for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        else:
            path.unlink()
            count += 1
    if leftovers:
        log.info("removed %d files of unfinished products (%d folders)", count, len(leftovers))
    return count


def remove_other_layouts(root: Path, layout: str) -> list[str]:
    """Remove what another layout left in the archive (a layout switch); return what went.

    The v2 folders (``BigEarthNet-S2``, ``Reference_Maps``, ``BigEarthNet-S1``) go unless the
    layout is ``v2`` or ``both``; the v1 folder and split files unless ``v1`` or ``both``; the
    archive's own LMDB and ``labels43.parquet`` unless ``lmdb``. A re-run after a switch then
    equals a clean build of the new layout, empty folders included.
    """
    v2, v1 = layout in ("v2", "both"), layout in ("v1", "both")
    other: list[Path] = []
    if not v2:
        other += [root / S2_DIR, root / REFMAP_DIR, root / S1_DIR]
    if not v1:
        other += [root / V1_DIR, *(root / name for name in V1_SPLIT_FILES.values())]
    if layout != "lmdb":
        other += [root / DB, root / LABELS43]
    removed = []
    for path in other:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
        log.info("removed %s: left by another layout than %s", path.name, layout)
    return removed
