"""Encode an archive for training: LMDB, key = patch name, value = a safetensors dict.

``BigEarthNet-S2.lmdb`` holds ``{band: native-resolution uint16 array}`` per patch and
``Reference_Maps.lmdb`` holds ``{"Data": 120 x 120 uint16 CLC codes}``, as other BigEarthNet tools
read them. ``metadata.parquet`` goes beside them, with the 43-label column added.
Both databases are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd
import rasterio
from safetensors.numpy import save

from ben_builder import archive, specs
from ben_builder.errors import ProductNotFoundError

log = logging.getLogger(__name__)

BANDS_DB = "BigEarthNet-S2.lmdb"
REFMAPS_DB = "Reference_Maps.lmdb"
COMMIT_EVERY = 500


@dataclass(frozen=True)
class EncodeSummary:
    """What an encoding run wrote."""

    patches: int
    bands_db: Path
    refmaps_db: Path | None
    skipped: bool = False


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.asarray(ds.read(1))


def encode_archive(
    root: Path, out: Path, include_flagged: bool = False,
    on_patch: Callable[[int], None] | None = None,
) -> EncodeSummary:  # fmt: skip
    """Encode the patches of ``metadata.parquet`` (and flagged ones if asked) into LMDB.

    Re-running with both databases present does nothing.
    """
    meta_path = root / archive.METADATA
    if not meta_path.exists():
        raise ProductNotFoundError(f"{meta_path}: not found; is {root} a ben_builder archive?")
    bands_db, refmaps_db = out / BANDS_DB, out / REFMAPS_DB
    meta = pd.read_parquet(meta_path)
    if include_flagged:
        meta = pd.concat([meta, pd.read_parquet(root / archive.FLAGGED)], ignore_index=True)
    parts = archive.read_parts(root).set_index("patch_id")
    meta = meta.sort_values("patch_id").reset_index(drop=True)
    labels43 = parts["labels43"].to_dict()
    meta["labels43"] = pd.Series([list(labels43[p]) for p in meta["patch_id"]], dtype=object)
    products = [str(parts.at[p, "product"]).rsplit("_", 1)[0] for p in meta["patch_id"]]
    if bands_db.exists() and (out / archive.METADATA).exists():
        log.info("%s already encoded", out)
        return EncodeSummary(len(meta), bands_db, refmaps_db if refmaps_db.exists() else None, True)
    out.mkdir(parents=True, exist_ok=True)
    has_refmaps = (root / archive.REFMAP_DIR).exists()
    tmp_bands, tmp_ref = (out / f".{BANDS_DB}.partial", out / f".{REFMAPS_DB}.partial")
    for tmp in (tmp_bands, tmp_ref):
        if tmp.exists():
            shutil.rmtree(tmp)
    map_size = (len(meta) + 1000) * 512 * 1024
    band_names = [b.name for b in specs.bands().bands]
    env = lmdb.open(str(tmp_bands), map_size=map_size, meminit=False)
    env_ref = lmdb.open(str(tmp_ref), map_size=map_size, meminit=False) if has_refmaps else None
    try:
        txn = env.begin(write=True)
        txn_ref = env_ref.begin(write=True) if env_ref else None
        for i, (patch_id, product) in enumerate(zip(meta["patch_id"], products, strict=True)):
            folder = archive.patch_dir(root, product, patch_id)
            arrays = {b: _read(folder / f"{patch_id}_{b}.tif") for b in band_names}
            txn.put(patch_id.encode(), save(arrays))
            if txn_ref is not None:
                ref = _read(archive.refmap_path(root, product, patch_id))
                txn_ref.put(patch_id.encode(), save({"Data": ref}))
            if (i + 1) % COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
                if txn_ref is not None and env_ref is not None:
                    txn_ref.commit()
                    txn_ref = env_ref.begin(write=True)
            if on_patch is not None:
                on_patch(1)
        txn.commit()
        if txn_ref is not None:
            txn_ref.commit()
    finally:
        env.close()
        if env_ref is not None:
            env_ref.close()
    for tmp, final in ((tmp_bands, bands_db), (tmp_ref, refmaps_db)):
        if tmp.exists():
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    archive.write_parquet(out / archive.METADATA, meta)  # last: marks the encoding complete
    return EncodeSummary(len(meta), bands_db, refmaps_db if has_refmaps else None)
