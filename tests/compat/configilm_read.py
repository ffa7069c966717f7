"""Read an encoded folder with configilm 0.7.1's BENv2 dataset and datamodule; dump what it read.

Runs in configilm's own environment (``.venv-configilm``, made by ``make configilm-env``: its
pins, numpy<2 and pyarrow<13, cannot share the project's environment). The test
``tests/test_configilm.py`` runs this script and compares its output with the archive's files.

Usage: ``configilm_read.py ENCODED OUT.npz [CHANNELS]`` (10: the 10 and 20 m bands, the default;
12: those and Sentinel-1's VV and VH), or ``configilm_read.py --rate N ENCODED`` to print the
patches per second of the dataset on N train patches (``benchmarks/bench_loaders.py``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from configilm.extra.BENv2_utils import NEW_LABELS
from configilm.extra.DataModules.BENv2_DataModule import BENv2DataModule
from configilm.extra.DataSets.BENv2_DataSet import BENv2DataSet

EVERY = 9  # images kept for every EVERY-th patch (all labels are kept)


def data_dirs_of(encoded: Path) -> dict[str, str]:
    """configilm's ``data_dirs`` for a folder written by ``ben-builder encode``."""
    return {
        "images_lmdb": str(encoded / "BigEarthNet.lmdb"),
        "metadata_parquet": str(encoded / "metadata.parquet"),
        "metadata_snow_cloud_parquet": str(
            encoded / "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
        ),
    }


def rate(encoded: Path, n: int) -> float:
    """Patches per second of the dataset (train split, 10 bands at 120 px), one process."""
    ds = BENv2DataSet(data_dirs_of(encoded), split="train", img_size=(10, 120, 120))
    ds[0]
    n = min(n, len(ds))
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t)


def main(encoded: Path, out: Path, channels: int = 10) -> None:
    """Load every patch (flagged ones included) and the datamodule's three splits."""
    data_dirs = data_dirs_of(encoded)
    ds = BENv2DataSet(
        data_dirs,
        split=None,
        img_size=(channels, 120, 120),
        include_cloudy=True,
        include_snowy=True,
        return_extras=True,
    )
    names, labels, kept_names, images = [], [], [], []
    for i in range(len(ds)):
        img, lbl, name = ds[i]
        names.append(name)
        labels.append(np.asarray(lbl))
        if i % EVERY == 0:
            kept_names.append(name)
            images.append(np.asarray(img))
    dm = BENv2DataModule(
        data_dirs, batch_size=8, img_size=(channels, 120, 120), num_workers_dataloader=0
    )
    dm.setup(None)
    batch = next(iter(dm.train_dataloader()))
    np.savez(
        out,
        names=np.array(names),
        labels=np.stack(labels),
        label_order=np.array(NEW_LABELS),
        channel_order=np.array(ds.channel_order),
        image_names=np.array(kept_names),
        images=np.stack(images),
        split_sizes=np.array([len(dm.train_ds), len(dm.val_ds), len(dm.test_ds)]),
        batch_shape=np.array(batch[0].shape),
    )


if __name__ == "__main__":
    if sys.argv[1] == "--rate":
        print(rate(Path(sys.argv[3]), int(sys.argv[2])))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
