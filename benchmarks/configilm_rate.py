"""Patches per second through configilm 0.7.1's BENv2 dataset (one process).

Runs in configilm's environment (``make configilm-env``); called by ``bench_loaders.py``.
Usage: ``configilm_rate.py ENCODED N`` -> prints the rate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from configilm.extra.DataSets.BENv2_DataSet import BENv2DataSet


def main(encoded: Path, n: int) -> None:
    """Time ``n`` samples (12 bands at 120 px, as the other loaders are timed)."""
    data_dirs = {
        "images_lmdb": str(encoded / "BigEarthNet.lmdb"),
        "metadata_parquet": str(encoded / "metadata.parquet"),
        "metadata_snow_cloud_parquet": str(
            encoded / "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
        ),
    }
    ds = BENv2DataSet(data_dirs, split="train", img_size=(10, 120, 120))
    ds[0]
    n = min(n, len(ds))
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    print(n / (time.perf_counter() - t))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
