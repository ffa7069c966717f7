"""Reading an archive back: its metadata rows, ours or a published release's."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ben_builder import archive
from ben_builder.errors import ProductFormatError, ProductNotFoundError

log = logging.getLogger(__name__)


def product_of(patch_name: str) -> str:
    """The product folder of a patch: its name without ``_<x>_<y>``."""
    return patch_name.rsplit("_", 2)[0]


def read_metadata(root: Path) -> pd.DataFrame:
    """Both metadata parquets of an archive, sorted by patch_id.

    Raises:
        ProductNotFoundError: no ``metadata.parquet``.
    """
    meta_path = root / archive.METADATA
    if not meta_path.exists():
        raise ProductNotFoundError(
            f"{meta_path}: not found; give the root of a BigEarthNet-v2-layout archive "
            "(the folder holding metadata.parquet and BigEarthNet-S2/)"
        )
    frames = [pd.read_parquet(meta_path)]
    if (root / archive.FLAGGED).exists():
        frames.append(pd.read_parquet(root / archive.FLAGGED))
    meta = pd.concat(frames, ignore_index=True)
    if "patch_id" not in meta:
        raise ProductFormatError(f"{meta_path}: no patch_id column")
    return meta.sort_values("patch_id").reset_index(drop=True)
