"""A build from EOPF Zarr products equals the build from the SAFE products they were made of."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import rasterio
import zarr

from ben_builder.chain.run import run
from ben_builder.errors import CorruptProductError, MetadataError, UnsupportedProductError
from ben_builder.product.reader import open_product
from ben_builder.product.safe import read_band
from ben_builder.sources.synthetic.eopf import write_eopf, write_eopf_item
from ben_builder.sources.synthetic.writer import scene_for, write_product
from tests.helpers import digest_tree
from tests.stand_ins.stacapi import StacServer, StacState
from tests.test_sources_synthetic_stac import RECIPES, SIZE_PX, _config


def _write(tmp_path, **kw):
    """The two acquisitions (04.00 with its offset, 02.07 without) as SAFE and as Zarr."""
    safe, stores = tmp_path / "safe", tmp_path / "zarr"
    with rasterio.Env():
        for r in RECIPES:
            product = write_product(r, scene_for(r.tile_id, SIZE_PX, 0), safe)
            write_eopf(product, stores, **kw)
    return safe, stores


def _patches(root):  # all but the product records (paths, rules, checksum)
    return {k: v for k, v in digest_tree(root).items() if not k.endswith((".json", ".sha256"))}


def _compare(built, reference):
    cmd = [sys.executable, "-m", "ben_builder.cli", "compare", str(built)]
    cmp = subprocess.run([*cmd, "--reference", str(reference)], capture_output=True, text=True)
    assert cmp.returncode == 0 and cmp.stdout.startswith("identical"), cmp.stdout + cmp.stderr


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_and_safe_products_build_the_same_archive(tmp_path, synthetic, zarr_format):
    """Zarr v2 (the CPM 2.5 samples) and v3: the same patches as from the SAFE products."""
    safe, stores = _write(tmp_path, zarr_format=zarr_format)
    a = run(_config(tmp_path, "from-safe", safe, synthetic.clc), progress=False)
    b = run(_config(tmp_path, "from-zarr", stores, synthetic.clc), progress=False)
    assert not a.failures and not b.failures, [r.error for r in a.failures + b.failures]
    assert sorted(r.product for r in b.results) == sorted(p.name for p in stores.iterdir())
    infos = {
        r.summary["product_info"]["processing_baseline"]: r.summary["product_info"]
        for r in b.results
    }
    assert infos["04.00"]["offset_rule"] == "declared"
    assert set(infos["04.00"]["radiometric_offset"].values()) == {-1000}
    assert infos["02.07"]["offset_rule"] == "declared" and not infos["02.07"]["radiometric_offset"]
    assert {i["image_format"] for i in infos.values()} == {"Zarr"}
    built = _patches(tmp_path / "from-zarr")
    assert (
        built == _patches(tmp_path / "from-safe") and sum(k.endswith(".tif") for k in built) > 1000
    )
    _compare(tmp_path / "from-zarr", tmp_path / "from-safe")
    # a re-run skips them (their identity: the stores' files); a changed store is redone
    again = run(_config(tmp_path, "from-zarr", stores, synthetic.clc), progress=False)
    assert all(r.summary["skipped"] for r in again.results)


def test_offsets_without_add_offset_follow_the_baseline_or_are_refused(tmp_path):
    _, stores = _write(tmp_path, declare_offset=False)
    (old,) = stores.glob("*_N0207_*")
    (new,) = stores.glob("*_N0400_*")
    product = open_product(old)
    assert product.offset_rule == "before-04.00" and not product.uses_offset
    with pytest.raises(UnsupportedProductError, match="declare no add_offset"):
        open_product(new)


def test_a_store_that_contradicts_its_name_lacks_scl_or_is_damaged_is_refused(tmp_path):
    _, stores = _write(tmp_path)
    store = sorted(stores.iterdir())[0]
    chunk = store / "measurements" / "reflectance" / "r10m" / "b03" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:100])  # a truncated download
    with pytest.raises(CorruptProductError, match=r"B03 .*cannot be decoded"):
        read_band(open_product(store), "B03", 10)
    other = stores / store.name.replace("_R022_", "_R023_")
    shutil.copytree(store, other)
    with pytest.raises(MetadataError, match="stac_discovery id"):
        open_product(other)
    shutil.rmtree(other)
    shutil.rmtree(store / "conditions" / "mask" / "l2a_classification")
    zarr.consolidate_metadata(store)
    with pytest.raises(MetadataError, match="l2a_classification/r20m/scl"):
        open_product(store)


def test_served_zarr_products_found_by_a_stac_search_build_the_same_archive(tmp_path, synthetic):
    """EOPF STAC items link the stores; zarr-python reads their metadata and GDAL their chunks
    over HTTP, from the stand-in's file server."""
    safe, stores = _write(tmp_path)
    items = tmp_path / "served-items"
    state = StacState(files=stores)
    with StacServer(state) as server:
        for store in sorted(stores.iterdir()):
            write_eopf_item(store, items, base_url=f"{server.base}/files")
        state.items = [json.loads(p.read_text()) for p in sorted(items.iterdir())]
        stac = {"url": f"{server.base}/", "items_dir": str(tmp_path / "found")}
        stac["query"] = {"start": "2017-01-01", "end": "2018-12-31"}
        inputs = {"source": "stac", "stac": stac, "clc_path": str(synthetic.clc)}
        built = run(_config(tmp_path, "from-stac", None, synthetic.clc, inputs), progress=False)
        sent = state.bytes_sent
    assert not built.failures, [r.error for r in built.failures]
    assert len(built.results) == len(RECIPES)
    ref = run(_config(tmp_path, "from-safe", safe, synthetic.clc), progress=False)
    assert not ref.failures
    assert _patches(tmp_path / "from-stac") == _patches(tmp_path / "from-safe")
    _compare(tmp_path / "from-stac", tmp_path / "from-safe")
    # the bands and SCL came over HTTP: about the stores' bytes once (no other product files)
    stored = sum(f.stat().st_size for f in stores.rglob("*") if f.is_file())
    assert 0.5 * stored < sent <= 1.2 * stored
