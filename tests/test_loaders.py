"""The loaders BigEarthNet users already have read our archives as they are.

torchgeo's ``BigEarthNetV2`` (v2 layout) and ``BigEarthNet`` (v1 layout and split files) are
run on an archive built here, with no edits; every sample is checked against the archive's own
files (pixels, labels, reference maps). configilm 0.7.1 pins numpy<2 and pyarrow<13, so it runs
in its own small environment (``make configilm-env``: ``.venv-configilm``, which takes torch and
lightning from the project's environment through a ``.pth`` line) on the folder ``encode`` wrote.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from ben_builder import archive, specs
from ben_builder.archive.finalize import finalize
from ben_builder.chain.product import Options, process_product
from ben_builder.encode import encode_archive

torchgeo_datasets = pytest.importorskip("torchgeo.datasets")

TORCHGEO_SPLITS = {"train": "train", "val": "validation", "test": "test"}
REPO = Path(__file__).resolve().parents[1]
CONFIGILM_PYTHON = REPO / ".venv-configilm" / "bin" / "python"


@pytest.fixture(scope="module")
def both_layouts(synthetic, tmp_path_factory):
    """An archive of the synthetic L2A products in the v2 and v1 layouts."""
    root = tmp_path_factory.mktemp("loaders")
    for r in synthetic.recipes:
        if r.level == "L2A":
            process_product(
                synthetic.path_of(r), root, Options(clc_path=synthetic.clc, layout="both")
            )
    finalize(root, layout="both")
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


@pytest.fixture(scope="module")
def reproduction_with_s1(tmp_path_factory):
    """A BigEarthNet v2 reproduction of one v2 acquisition with its generated S1 half."""
    import yaml

    from ben_builder.chain.run import run
    from ben_builder.config import load_config
    from ben_builder.sources.synthetic.products import ProductRecipe
    from ben_builder.sources.synthetic.writer import write_dataset

    root = tmp_path_factory.mktemp("with-s1")
    vnj = ProductRecipe(
        "T35VNJ", "L2A", "02.06", datetime(2018, 2, 4, 9, 41, 59), mission="S2B", relative_orbit=36
    )
    with rasterio.Env():
        written = write_dataset([vnj], root / "inputs", size_px=1260, seed=0, s1=True)
    cfg = {
        "name": "v2-s1",
        "output": str(root / "archive"),
        "reproduce": "bigearthnet-v2",
        "inputs": {
            "source": "local",
            "products_dir": str(root / "inputs" / "products"),
            "clc_path": str(written.clc),
        },
        "s1": {"bigearthnet_v1": str(written.s1)},
        "cluster": {"kind": "local", "n_workers": 1},
        "report_samples": 0,
    }
    (root / "v2.yaml").write_text(yaml.safe_dump(cfg))
    result = run(load_config(root / "v2.yaml"), progress=False)
    ok = [r for r in result.results if r.ok]
    assert len(ok) == 1 and result.s1 is not None and not result.s1.failures
    return root / "archive"


@pytest.mark.parametrize("bands", ["all", "s1"])
def test_torchgeo_bigearthnet_v2_reads_the_s1_half_of_a_reproduction(reproduction_with_s1, bands):
    root = reproduction_with_s1
    meta = pd.read_parquet(root / archive.METADATA)
    assert meta["s1_name"].notna().all()  # no null in any column
    assert not meta.isna().any().any()
    seen = 0
    for tg_split, split in TORCHGEO_SPLITS.items():
        ds = torchgeo_datasets.BigEarthNetV2(root=str(root), split=tg_split, bands=bands)
        rows = meta[meta["split"] == split].reset_index(drop=True)
        assert len(ds) == len(rows)
        for i in range(len(ds)):  # every sample
            sample = ds[i]
            s1 = sample["image_s1"] if bands == "all" else sample["image"]
            name = rows.loc[i, "s1_name"]
            folder = archive.s1_patch_dir(root, name)
            assert s1.shape == (2, 120, 120)
            for channel, pol in enumerate(("VH", "VV")):  # torchgeo sorts the file names
                with rasterio.open(folder / f"{name}_{pol}.tif") as f:
                    want = f.read(1, out_dtype="int32")  # as torchgeo reads them
                np.testing.assert_array_equal(s1[channel].numpy(), want)
            if bands == "all":
                assert sample["image_s2"].shape == (12, 120, 120)
            seen += 1
    assert seen == len(meta) > 0


def test_torchgeo_bigearthnet_v1_reads_the_v1_layout_and_split_files(both_layouts):
    root = both_layouts
    meta = pd.read_parquet(root / archive.METADATA)
    esa = [b.name for b in specs.bands().bands]
    class_set = list(torchgeo_datasets.BigEarthNet.class_sets[43])
    seen = 0
    for tg_split, split in TORCHGEO_SPLITS.items():
        ds = torchgeo_datasets.BigEarthNet(
            root=str(root), split=tg_split, bands="s2", num_classes=43
        )
        names = sorted(meta.loc[meta["split"] == split, "s2v1_name"])
        assert len(ds) == len(names) > 0
        for i in range(0, len(ds), max(1, len(ds) // 5)):
            sample = ds[i]
            folder = root / archive.V1_DIR / names[i]
            assert sample["image"].shape == (12, 120, 120)
            np.testing.assert_array_equal(
                sample["image"][esa.index("B04")].numpy(), _pixels(folder / f"{names[i]}_B04.tif")
            )
            labels = json.loads((folder / f"{names[i]}_labels_metadata.json").read_text())
            want = np.zeros(43, np.int64)
            want[[class_set.index(name) for name in labels["labels"]]] = 1
            np.testing.assert_array_equal(sample["label"].numpy(), want)
            seen += 1
    assert seen > 0


def test_configilm_reads_the_encoded_folder_with_cloudy_and_snowy_patches(both_layouts, tmp_path):
    if not CONFIGILM_PYTHON.exists():
        pytest.skip("configilm's environment is missing: run `make configilm-env`")
    root = both_layouts
    encoded = tmp_path / "encoded"
    encode_archive(root, encoded)
    dump = tmp_path / "configilm.npz"
    subprocess.run(
        [
            str(CONFIGILM_PYTHON),
            str(REPO / "tests" / "compat" / "configilm_read.py"),
            str(encoded),
            str(dump),
        ],
        check=True,
        capture_output=True,
    )
    got = np.load(dump)
    meta = pd.read_parquet(root / archive.METADATA)
    flagged = pd.read_parquet(root / archive.FLAGGED)
    assert len(flagged) > 0
    every = pd.concat([meta, flagged]).sort_values("patch_id").reset_index(drop=True)
    assert list(got["names"]) == list(every["patch_id"])  # flagged patches load too
    order = list(got["label_order"])
    assert order == sorted(order)  # configilm's label order: alphabetical
    for row, labels in zip(got["labels"], every["labels"], strict=True):
        assert [order[i] for i in np.flatnonzero(row)] == sorted(labels)
    channels = list(got["channel_order"])
    for name, image in zip(got["image_names"], got["images"], strict=True):
        folder = archive.patch_dir(root, name.rsplit("_", 2)[0], name)
        for c, band in enumerate(channels):
            px = _pixels(folder / f"{name}_{band}.tif").astype(np.float32)
            if px.shape[0] == 60:  # configilm upsamples 20 m bands by nearest neighbour
                px = px.repeat(2, axis=0).repeat(2, axis=1)
            np.testing.assert_array_equal(image[c], px)
    sizes = [int((meta["split"] == s).sum()) for s in ("train", "validation", "test")]
    assert list(got["split_sizes"]) == sizes
    assert list(got["batch_shape"]) == [8, len(channels), 120, 120]


def test_configilm_reads_the_s1_bands_of_an_encoded_reproduction(reproduction_with_s1, tmp_path):
    """``encode`` takes the archive's own BigEarthNet-S1/; configilm's S1 band group reads it."""
    if not CONFIGILM_PYTHON.exists():
        pytest.skip("configilm's environment is missing: run `make configilm-env`")
    root = reproduction_with_s1
    encoded = tmp_path / "encoded"
    summary = encode_archive(root, encoded)  # no s1_root: the archive's own
    meta = pd.concat(
        [pd.read_parquet(root / archive.METADATA), pd.read_parquet(root / archive.FLAGGED)]
    )
    assert summary.s1_patches == len(meta) > 0
    dump = tmp_path / "configilm.npz"
    script = REPO / "tests" / "compat" / "configilm_read.py"
    subprocess.run(
        [str(CONFIGILM_PYTHON), str(script), str(encoded), str(dump), "12"],
        check=True,
        capture_output=True,
    )
    got = np.load(dump)
    channels = list(got["channel_order"])
    assert channels[:2] == ["VV", "VH"] and len(channels) == 12
    s1_of = dict(zip(meta["patch_id"], meta["s1_name"], strict=True))
    assert len(got["image_names"]) > 0
    for name, image in zip(got["image_names"], got["images"], strict=True):
        s1 = s1_of[name]
        for c, pol in enumerate(("VV", "VH")):
            with rasterio.open(archive.s1_patch_dir(root, s1) / f"{s1}_{pol}.tif") as f:
                np.testing.assert_array_equal(image[c], f.read(1))
