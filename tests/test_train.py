"""Encoding to LMDB and CPU training/evaluation on a tiny archive."""

import json

import lmdb
import numpy as np
import pandas as pd
import pytest
import rasterio
from safetensors.numpy import load

from ben_builder import archive, specs
from ben_builder.encode import BANDS_DB, REFMAPS_DB, encode_archive
from ben_builder.process import Options, process_product

torch = pytest.importorskip("torch")

from ben_builder.train.config import TrainConfig  # noqa: E402
from ben_builder.train.data import EncodedPatches  # noqa: E402
from ben_builder.train.engine import BEST, LAST, evaluate, train  # noqa: E402
from ben_builder.train.models import MultiBranchCNN, ResNet50  # noqa: E402


@pytest.fixture(scope="module")
def encoded(synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("arch")
    for r in synthetic.recipes:
        if r.level == "L2A":
            process_product(synthetic.path_of(r), root, Options(clc_path=synthetic.clc))
    archive.finalize(root)
    out = tmp_path_factory.mktemp("enc")
    summary = encode_archive(root, out)
    return root, out, summary


def test_encode_round_trip_is_bit_exact(encoded):
    root, out, summary = encoded
    meta = pd.read_parquet(out / archive.METADATA)
    assert summary.patches == len(meta) == len(pd.read_parquet(root / archive.METADATA))
    parts = archive.read_parts(root).set_index("patch_id")
    env = lmdb.open(str(out / BANDS_DB), readonly=True, lock=False)
    env_ref = lmdb.open(str(out / REFMAPS_DB), readonly=True, lock=False)
    with env.begin() as txn, env_ref.begin() as txn_ref:
        assert txn.stat()["entries"] == len(meta)
        for patch_id in meta.patch_id:
            product = parts.at[patch_id, "product"].rsplit("_", 1)[0]
            arrays = load(txn.get(patch_id.encode()))
            assert sorted(arrays) == sorted(b.name for b in specs.bands().bands)
            for b in specs.bands().bands:
                with rasterio.open(archive.patch_dir(root, product, patch_id)
                                   / f"{patch_id}_{b.name}.tif") as ds:  # fmt: skip
                    want = ds.read(1)
                assert arrays[b.name].dtype == np.uint16
                np.testing.assert_array_equal(arrays[b.name], want)
            ref = load(txn_ref.get(patch_id.encode()))["Data"]
            with rasterio.open(archive.refmap_path(root, product, patch_id)) as ds:
                np.testing.assert_array_equal(ref, ds.read(1))
    env.close()
    env_ref.close()
    assert encode_archive(root, out).skipped
    ds43 = EncodedPatches(out, None, 43, ("B02", "B03", "B04"))
    assert ds43.targets.shape == (len(meta), 43) and ds43.targets.sum(axis=1).min() >= 1
    item = ds43[0]
    assert set(item) == {"y", "x10"} and item["x10"].shape == (3, 120, 120)


def test_models_shapes():
    x = {
        10: torch.zeros(2, 4, 120, 120),
        20: torch.zeros(2, 6, 60, 60),
        60: torch.zeros(2, 2, 20, 20),
    }
    assert MultiBranchCNN({10: 4, 20: 6, 60: 2}, 19)(x).shape == (2, 19)
    r = ResNet50(12, 19)
    assert r(torch.zeros(2, 12, 120, 120)).shape == (2, 19)
    assert 23_000_000 < sum(p.numel() for p in r.parameters()) < 24_000_000


def test_cpu_training_loss_falls_and_evaluation_writes_every_metric(encoded, tmp_path):
    _, out, _ = encoded
    cfg = TrainConfig(name="t", encoded=out, output=tmp_path / "run", epochs=2, batch_size=8,
                      lr=3e-3, num_workers=0, max_steps_per_epoch=12, norm_samples=64,
                      device="cpu")  # fmt: skip
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
