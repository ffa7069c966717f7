"""The loaders BigEarthNet users already have read our archives as they are.

torchgeo's ``BigEarthNetV2`` (v2 layout) and ``BigEarthNet`` (v1 layout and split files) are
run on an archive built here, with no edits; every sample is checked against the archive's own
files (pixels, labels, reference maps). configilm's check is in ``test_configilm.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from ben_builder import archive, specs
from ben_builder.process import Options, process_product

torchgeo_datasets = pytest.importorskip("torchgeo.datasets")

TORCHGEO_SPLITS = {"train": "train", "val": "validation", "test": "test"}


@pytest.fixture(scope="module")
def both_layouts(synthetic, tmp_path_factory):
    """An archive of the synthetic L2A products in the v2 and v1 layouts."""
    root = tmp_path_factory.mktemp("loaders")
    for r in synthetic.recipes:
        if r.level == "L2A":
            process_product(synthetic.path_of(r), root,
                            Options(clc_path=synthetic.clc, layout="both"))  # fmt: skip
    archive.finalize(root, layout="both")
    return root


def _pixels(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_torchgeo_bigearthnet_v2_reads_the_archive_unchanged(both_layouts):
    root = both_layouts
    meta = pd.read_parquet(root / archive.METADATA)
    esa = [b.name for b in specs.bands().bands]  # the spec lists the bands in ESA order
    class_set = list(torchgeo_datasets.BigEarthNetV2.class_set)
    for tg_split, split in TORCHGEO_SPLITS.items():
        ds = torchgeo_datasets.BigEarthNetV2(root=str(root), split=tg_split, bands="s2")
        rows = meta[meta["split"] == split].reset_index(drop=True)
        assert len(ds) == len(rows) > 0
        for i in range(0, len(ds), max(1, len(ds) // 7)):
            sample = ds[i]
            patch_id = rows.loc[i, "patch_id"]
            folder = archive.patch_dir(root, patch_id.rsplit("_", 2)[0], patch_id)
            assert sample["image"].shape == (12, 120, 120)
            for band in ("B02", "B03", "B04", "B08"):  # 10 m: read without resampling
                want_px = _pixels(folder / f"{patch_id}_{band}.tif")
                np.testing.assert_array_equal(sample["image"][esa.index(band)].numpy(), want_px)
            want = np.zeros(19, np.int64)
            want[[class_set.index(name) for name in rows.loc[i, "labels"]]] = 1
            np.testing.assert_array_equal(sample["label"].numpy(), want)
            codes = _pixels(archive.refmap_path(root, patch_id.rsplit("_", 2)[0], patch_id))
            ordinal = np.vectorize(lambda c: torchgeo_datasets.BigEarthNetV2.clc_codes.get(c, c))
            np.testing.assert_array_equal(sample["mask"][0].numpy(), ordinal(codes))


def test_torchgeo_bigearthnet_v1_reads_the_v1_layout_and_split_files(both_layouts):
    root = both_layouts
    meta = pd.read_parquet(root / archive.METADATA)
    esa = [b.name for b in specs.bands().bands]
    class_set = list(torchgeo_datasets.BigEarthNet.class_sets[43])
    seen = 0
    for tg_split, split in TORCHGEO_SPLITS.items():
        ds = torchgeo_datasets.BigEarthNet(root=str(root), split=tg_split, bands="s2",
                                           num_classes=43)  # fmt: skip
        names = sorted(meta.loc[meta["split"] == split, "s2v1_name"])
        assert len(ds) == len(names) > 0
        for i in range(0, len(ds), max(1, len(ds) // 5)):
            sample = ds[i]
            folder = root / archive.V1_DIR / names[i]
            assert sample["image"].shape == (12, 120, 120)
            np.testing.assert_array_equal(sample["image"][esa.index("B04")].numpy(),
                                          _pixels(folder / f"{names[i]}_B04.tif"))  # fmt: skip
            labels = json.loads((folder / f"{names[i]}_labels_metadata.json").read_text())
            want = np.zeros(43, np.int64)
            want[[class_set.index(name) for name in labels["labels"]]] = 1
            np.testing.assert_array_equal(sample["label"].numpy(), want)
            seen += 1
    assert seen > 0
