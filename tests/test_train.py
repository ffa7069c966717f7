"""Encoding to LMDB and CPU training/evaluation on a tiny archive."""

import json
import shutil

import lmdb
import numpy as np
import pandas as pd
import pytest
import rasterio
from safetensors.numpy import load

from ben_builder import archive, specs
from ben_builder.archive.finalize import finalize
from ben_builder.chain.product import Options, process_product
from ben_builder.encode import DB, LABELS43, encode_archive
from ben_builder.errors import ModelError, ProductNotFoundError
from ben_builder.files import write_parquet

torch = pytest.importorskip("torch")

from ben_builder.train.config import ALL_BANDS, TrainConfig  # noqa: E402
from ben_builder.train.data import EncodedPatches, class_names  # noqa: E402
from ben_builder.train.engine import BEST, LAST, evaluate, train  # noqa: E402
from ben_builder.train.models import MultiBranchCNN, resnet50  # noqa: E402

torchvision = pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def encoded(synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    for r in synthetic.recipes:
        if r.level == "L2A":
            process_product(synthetic.path_of(r), root, Options(clc_path=synthetic.clc))
    finalize(root)
    out = tmp_path_factory.mktemp("enc")
    summary = encode_archive(root, out)
    return root, out, summary


def _check_encoded(root, out):
    """Every patch of both parquets in the one LMDB, pixel-equal to the archive's GeoTIFFs."""
    meta = pd.concat(
        [pd.read_parquet(root / archive.METADATA), pd.read_parquet(root / archive.FLAGGED)]
    )
    env = lmdb.open(str(out / DB), readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.stat()["entries"] == 2 * len(meta)  # bands and reference map per patch
        for patch_id in meta.patch_id:
            product = patch_id.rsplit("_", 2)[0]
            arrays = load(txn.get(patch_id.encode()))
            assert sorted(arrays) == sorted(b.name for b in specs.bands().bands)
            for b in specs.bands().bands:
                with rasterio.open(
                    archive.patch_dir(root, product, patch_id) / f"{patch_id}_{b.name}.tif"
                ) as ds:
                    want = ds.read(1)
                assert arrays[b.name].dtype == np.uint16
                assert arrays[b.name].shape == (b.size_px, b.size_px)
                np.testing.assert_array_equal(arrays[b.name], want)
            ref = load(txn.get(f"{patch_id}_reference_map".encode()))
            assert list(ref) == ["Data"]
            with rasterio.open(archive.refmap_path(root, product, patch_id)) as ds:
                np.testing.assert_array_equal(ref["Data"], ds.read(1))
    env.close()
    for name in (archive.METADATA, archive.FLAGGED):  # the published files, unchanged
        assert (out / name).read_bytes() == (root / name).read_bytes()


def test_encode_round_trip_is_bit_exact(encoded):
    root, out, summary = encoded
    flagged = pd.read_parquet(root / archive.FLAGGED)
    assert len(flagged) > 0  # cloudy and snowy patches are encoded too
    assert (
        summary.patches
        == summary.reference_maps
        == (len(pd.read_parquet(root / archive.METADATA)) + len(flagged))
    )
    _check_encoded(root, out)
    assert encode_archive(root, out).skipped
    ds43 = EncodedPatches(out, None, 43, ("B02", "B03", "B04"))
    meta = pd.read_parquet(out / archive.METADATA)
    assert ds43.targets.shape == (len(meta), 43) and ds43.targets.sum(axis=1).min() >= 1
    item = ds43[0]
    assert set(item) == {"y", "x10"} and item["x10"].shape == (3, 120, 120)


def test_encode_official_layout_without_parts_and_with_s1(encoded, tmp_path):
    """A v2 archive as the official download has it (no _parts/), with a hand-made S1 folder."""
    root, _, _ = encoded
    official = tmp_path / "BigEarthNet-V2"
    for name in (archive.S2_DIR, archive.REFMAP_DIR):
        shutil.copytree(root / name, official / name)
    meta = pd.read_parquet(root / archive.METADATA)
    s1_root = official / "BigEarthNet-S1"
    rng = np.random.default_rng(0)
    s1_names, s1_pixels = [], {}
    for i, patch_id in enumerate(meta.patch_id):
        if i % 3:
            s1_names.append(None)
            continue
        product, x, y = patch_id.rsplit("_", 2)
        s1 = f"S1A_IW_GRDH_1SDV_{product.split('_')[2]}_{product[-5:]}_{x}_{y}"
        s1_names.append(s1)
        folder = s1_root / "S1A_IW_GRDH_1SDV_20170613T165043" / s1
        folder.mkdir(parents=True)
        for band in ("VV", "VH"):
            px = rng.normal(-12, 3, (120, 120)).astype(np.float32)
            s1_pixels[(s1, band)] = px
            with rasterio.open(
                folder / f"{s1}_{band}.tif",
                "w",
                driver="GTiff",
                width=120,
                height=120,
                count=1,
                dtype="float32",
            ) as ds:
                ds.write(px, 1)
    meta["s1_name"] = pd.Series(s1_names, dtype=object)
    write_parquet(official / archive.METADATA, meta, schema=archive.METADATA_SCHEMA)
    shutil.copy(root / archive.FLAGGED, official / archive.FLAGGED)
    out = tmp_path / "enc"
    summary = encode_archive(official, out, s1_root=s1_root)
    assert summary.s1_patches == len(s1_pixels) // 2 > 0
    assert not (out / LABELS43).exists()  # the official archive has no 43-label column
    env = lmdb.open(str(out / DB), readonly=True, lock=False)
    with env.begin() as txn:
        for (s1, band), px in s1_pixels.items():
            np.testing.assert_array_equal(load(txn.get(s1.encode()))[band], px)
    env.close()
    # the S2 part equals the encoding of the archive it was copied from
    (official / archive.METADATA).write_bytes((root / archive.METADATA).read_bytes())
    shutil.rmtree(out)
    encode_archive(official, out, workers=2)  # two reading processes: the same LMDB contents
    _check_encoded(official, out)
    # a patch of the metadata without its files: the error names the file
    next((official / archive.S2_DIR).rglob("*_B8A.tif")).unlink()
    with pytest.raises(ProductNotFoundError, match="_B8A.tif: missing"):
        encode_archive(official, tmp_path / "enc2")
    assert not (tmp_path / "enc2" / DB).exists()


def test_models_shapes():
    x = {
        10: torch.zeros(2, 4, 120, 120),
        20: torch.zeros(2, 6, 60, 60),
        60: torch.zeros(2, 2, 20, 20),
    }
    assert MultiBranchCNN({10: 4, 20: 6, 60: 2}, 19)(x).shape == (2, 19)
    r = resnet50(12, 19)
    assert r(torch.zeros(2, 12, 120, 120)).shape == (2, 19)
    assert 23_000_000 < sum(p.numel() for p in r.parameters()) < 24_000_000
    # the state dict is torchvision's own: it loads into a plain resnet50 with a 12-band stem
    plain = torchvision.models.resnet50(num_classes=19)
    plain.conv1 = torch.nn.Conv2d(12, 64, 7, 2, 3, bias=False)
    plain.load_state_dict(r.state_dict())


def test_cpu_training_loss_falls_and_evaluation_writes_every_metric(encoded, tmp_path):
    _, out, _ = encoded
    cfg = TrainConfig(
        name="t",
        encoded=out,
        output=tmp_path / "run",
        epochs=2,
        batch_size=8,
        lr=3e-3,
        num_workers=0,
        max_steps_per_epoch=12,
        norm_samples=64,
        device="cpu",
    )
    losses: list[float] = []
    state = train(cfg, on_step=lambda step, loss: losses.append(loss))
    n_train = len(EncodedPatches(out, "train", 19, cfg.bands))
    assert len(losses) == 2 * min(12, -(-n_train // 8)) and state["epoch"] == 2
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    assert (cfg.output / BEST).exists() and (cfg.output / LAST).exists()
    results = evaluate(cfg.output / BEST)
    for part in ("model", "baseline_train_frequencies"):
        for avg in ("micro", "macro", "samples"):
            for m in ("precision", "recall", "f1", "f2"):
                assert 0 <= results[part][f"{m}_{avg}"] <= 1
        assert 0 < results[part]["average_precision_macro"] <= 1
        assert 0 < results[part]["average_precision_micro"] <= 1
    doc = json.loads((cfg.output / "results.json").read_text())
    assert len(doc["per_class"]) == 19 and doc["split"] == "test"
    assert "| average_precision_macro |" in (cfg.output / "results.md").read_text()
    assert (cfg.output / "training_curve.png").stat().st_size > 5000
    # resumable: a longer run continues from the last checkpoint
    longer = train(cfg.model_copy(update={"epochs": 3}))
    assert [h["epoch"] for h in longer["history"]] == [1, 2, 3]


def test_band_and_class_order_are_recorded_and_a_foreign_model_evaluates(encoded, tmp_path):
    """A ResNet-50 trained here, saved as a bare torchvision state dict with its stem in another
    band order and its outputs in configilm's (alphabetical) order, evaluates to the same
    figures once that order is declared; a wrong declaration gives other figures."""
    _, out, _ = encoded
    cfg = TrainConfig(
        name="r",
        encoded=out,
        output=tmp_path / "run",
        model="resnet50",
        epochs=1,
        batch_size=8,
        num_workers=0,
        max_steps_per_epoch=4,
        norm_samples=100_000,
        device="cpu",
    )
    train(cfg)
    ckpt = torch.load(cfg.output / BEST, weights_only=False)
    assert ckpt["bands"] == list(ALL_BANDS)  # ESA order
    assert ckpt["classes"] == class_names(19)
    ours = evaluate(cfg.output / BEST, split="validation", out=tmp_path / "ours")

    order = ("B12", "B04", "B03", "B02", "B8A", "B11", "B01", "B05", "B06", "B07", "B08", "B09")
    alpha = class_names(19, "alphabetical")
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["conv1.weight"] = state["conv1.weight"][:, [ALL_BANDS.index(b) for b in order]]
    rows = [class_names(19).index(c) for c in alpha]
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][rows], state["fc.bias"][rows]
    foreign = tmp_path / "elsewhere" / "resnet50.pth"
    foreign.parent.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, foreign)  # Lightning
    theirs = evaluate(
        foreign,
        split="validation",
        out=tmp_path / "theirs",
        encoded=out,
        bands=order,
        class_order="alphabetical",
        norm_samples=100_000,
    )
    for k, v in ours["model"].items():
        assert theirs["model"][k] == pytest.approx(v, abs=1e-6), k
    table = json.loads((tmp_path / "theirs" / "results.json").read_text())["per_class"]
    assert [r["class"] for r in table] == alpha
    wrong = evaluate(
        foreign,
        split="validation",
        out=tmp_path / "wrong",
        encoded=out,
        bands=ALL_BANDS,
        class_order="alphabetical",
        norm_samples=100_000,
    )
    assert wrong["model"] != pytest.approx(ours["model"], abs=1e-6)
    with pytest.raises(ModelError, match="--bands"):
        evaluate(foreign, encoded=out)
    with pytest.raises(ModelError, match="disagrees"):
        evaluate(cfg.output / BEST, bands=order)
