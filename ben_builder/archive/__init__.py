"""The archive's layout: the folder and file names of the BigEarthNet layouts, and their paths.

What a run writes and reads back lives beside this: :mod:`.writer` (patch GeoTIFFs, v1 JSON),
:mod:`.shards` (rico-hdl's LMDB values), :mod:`.finalize` (the metadata parquets and side files),
:mod:`.reader` (reading an archive's metadata back), :mod:`.provenance` (input fingerprints)
and :mod:`.compare` (an archive against a published release).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

S2_DIR = "BigEarthNet-S2"
V1_DIR = "BigEarthNet-v1.0"
S1_DIR = "BigEarthNet-S1"  # empty in an S2-only archive; loaders of the official layout expect it
DB = "BigEarthNet.lmdb"  # rico-hdl's LMDB: written by `encode`, or by the build (layout lmdb)
LABELS43 = "labels43.parquet"
SHARD_SUFFIX = ".mdb"  # a product's LMDB shard in _parts/ (layout lmdb)
# v1 split files as the official v1 models repository and torchgeo name them: "<s2>,<s1>" lines
V1_SPLIT_FILES = {
    "train": "bigearthnet-train.csv",
    "validation": "bigearthnet-val.csv",
    "test": "bigearthnet-test.csv",
}
REFMAP_DIR = "Reference_Maps"
REFMAP_RESOLUTION_M = 10  # reference maps are at the 10 m grid of the patch
PARTS_DIR = "_parts"
METADATA = "metadata.parquet"
FLAGGED = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
METADATA_COLUMNS = (
    "patch_id",
    "labels",
    "split",
    "country",
    "s1_name",
    "s2v1_name",
    "contains_seasonal_snow",
    "contains_cloud_or_shadow",
)
# The published BigEarthNet v2 parquet types (string, not large_string; s1_name string, not null)
METADATA_SCHEMA = pa.schema(
    [
        ("patch_id", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("split", pa.string()),
        ("country", pa.string()),
        ("s1_name", pa.string()),
        ("s2v1_name", pa.string()),
        ("contains_seasonal_snow", pa.bool_()),
        ("contains_cloud_or_shadow", pa.bool_()),
    ]
)


def shard_path(root: Path, product_stem: str) -> Path:
    """A product's LMDB shard (layout ``lmdb``): its patches, merged into ``DB`` at the end."""
    return root / PARTS_DIR / f"{product_stem}{SHARD_SUFFIX}"


def patch_dir(root: Path, product_stem: str, patch_id: str) -> Path:
    """Folder of one patch's band files in the v2 layout."""
    return root / S2_DIR / product_stem / patch_id


def refmap_path(root: Path, product_stem: str, patch_id: str) -> Path:
    """Path of one patch's reference map in the v2 layout."""
    return root / REFMAP_DIR / product_stem / patch_id / f"{patch_id}_reference_map.tif"


def s1_product_start(s1_name: str) -> str:
    """The S1 product start of an S1 patch name (``S1A_IW_GRDH_1SDV_<time>``)."""
    return s1_name.rsplit("_", 3)[0]


def s1_patch_dir(root: Path, s1_name: str) -> Path:
    """Folder of one S1 patch's VV and VH in the v2 layout."""
    return root / S1_DIR / s1_product_start(s1_name) / s1_name


def part_path(root: Path, product_stem: str) -> Path:
    """Per-product metadata part; its presence marks the product as finished."""
    return root / PARTS_DIR / f"{product_stem}.parquet"
