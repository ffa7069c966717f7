"""A build from STAC items equals the build from the SAFE products they describe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import rasterio
import yaml

from ben_builder import archive
from ben_builder.chain.run import run
from ben_builder.config import load_config
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.stac import write_item
from ben_builder.sources.synthetic.writer import scene_for, write_product
from tests.helpers import digest_tree
from tests.stand_ins.stacapi import StacServer, StacState

SIZE_PX = 1260


def _config(tmp_path, name, products, clc, inputs=None, **extra):
    cfg = {
        **extra,
        "name": name,
        "output": str(tmp_path / name),
        "inputs": inputs
        or {"source": "local", "products_dir": str(products), "clc_path": str(clc)},
        "cluster": {"kind": "local", "n_workers": 1},
        "report_samples": 0,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


RECIPES = [
    ProductRecipe(
        "T33UUP", "L2A", "04.00", datetime(2017, 6, 13, 10, 10, 31), image_format="GeoTIFF"
    ),
    ProductRecipe(
        "T34VER",
        "L2A",
        "02.07",
        datetime(2018, 2, 15, 10, 0, 29),
        relative_orbit=36,
        image_format="GeoTIFF",
    ),
]


def _write(safe, items, base_url=None):
    with rasterio.Env():
        for r in RECIPES:
            product = write_product(r, scene_for(r.tile_id, SIZE_PX, 0), safe)
            write_item(product, items, base_url)


def test_items_and_safe_products_build_the_same_archive(tmp_path, synthetic):
    """Two acquisitions, before and after baseline 04.00 (offset from the MTD asset)."""
    safe, items = tmp_path / "safe", tmp_path / "items"
    _write(safe, items)
    a = run(_config(tmp_path, "from-safe", safe, synthetic.clc), progress=False)
    b = run(_config(tmp_path, "from-items", items, synthetic.clc), progress=False)
    assert not a.failures and not b.failures, [r.error for r in a.failures + b.failures]
    assert sorted(r.product for r in b.results) == sorted(p.name for p in items.iterdir())
    rules = {r.summary["product_info"]["offset_rule"] for r in b.results}
    assert rules == {"MTD", "before-04.00"}

    def patches(root):  # all but the product records (paths, rules, checksum)
        return {k: v for k, v in digest_tree(root).items() if not k.endswith((".json", ".sha256"))}

    built, ref = patches(tmp_path / "from-items"), patches(tmp_path / "from-safe")
    assert built == ref and sum(k.endswith(".tif") for k in built) > 1000
    cmp = subprocess.run(
        [
            sys.executable,
            "-m",
            "ben_builder.cli",
            "compare",
            str(tmp_path / "from-items"),
            "--reference",
            str(tmp_path / "from-safe"),
        ],
        capture_output=True,
        text=True,
    )
    assert cmp.returncode == 0 and cmp.stdout.startswith("identical"), cmp.stdout + cmp.stderr
    # a re-run from the items skips them (their identity: item bytes and local assets)
    again = run(_config(tmp_path, "from-items", items, synthetic.clc), progress=False)
    assert all(r.summary["skipped"] for r in again.results)
    assert (tmp_path / "from-items" / archive.METADATA).exists()


def test_a_stac_api_search_builds_the_same_archive_from_served_cogs(tmp_path, synthetic):
    """pystac-client against a local STAC API; GDAL reads the bands over HTTP range requests."""
    safe, items = tmp_path / "safe", tmp_path / "served-items"
    state = StacState(files=safe)
    with StacServer(state) as server:
        _write(safe, items, base_url=f"{server.base}/files")
        state.items = [json.loads(p.read_text()) for p in sorted(items.iterdir())]
        for other in list(state.items):  # another collection's copy: not asked for
            state.items.append({**other, "collection": "sentinel-2-l1c", "id": other["id"] + "x"})
        stac = {
            "url": f"{server.base}/",
            "collection": "sentinel-2-l2a",
            "items_dir": str(tmp_path / "found"),
            "query": {"start": "2017-01-01", "end": "2018-12-31", "bbox": [10, 45, 25, 66]},
        }
        inputs = {"source": "stac", "stac": stac, "clc_path": str(synthetic.clc)}
        built = run(_config(tmp_path, "from-stac", None, synthetic.clc, inputs), progress=False)
        sent = state.bytes_sent
        assert any(r.startswith("POST /search") for r in state.requests)
        ranged = run(_config(tmp_path, "from-stac", None, synthetic.clc, inputs), progress=False)
        # a band file replaced on the server under the same item: its ETag changes, so the
        # product is cut again (the other is not)
        (b04,) = safe.glob("*T33UUP*/GRANULE/*/IMG_DATA/R10m/*_B04_10m.tif")
        os.utime(b04, ns=(b04.stat().st_atime_ns, b04.stat().st_mtime_ns + 10**9))
        replaced = run(_config(tmp_path, "from-stac", None, synthetic.clc, inputs), progress=False)
    assert not built.failures, [r.error for r in built.failures]
    redone = {r.product[:20]: not r.summary["skipped"] for r in replaced.results}
    assert sorted(redone.items()) == [
        ("S2A_MSIL2A_20170613T", True),
        ("S2A_MSIL2A_20180215T", False),
    ]
    assert sorted(p.name for p in (tmp_path / "found").iterdir()) == sorted(
        p.name for p in items.iterdir()
    )
    assert all(r.summary["skipped"] for r in ranged.results)  # same items: nothing to redo
    ref = run(_config(tmp_path, "from-safe", safe, synthetic.clc), progress=False)
    assert not ref.failures

    def patches(root):
        return {k: v for k, v in digest_tree(root).items() if not k.endswith((".json", ".sha256"))}

    assert patches(tmp_path / "from-stac") == patches(tmp_path / "from-safe")
    # the bands came over HTTP: the band files the items name, once each (whole tiles here),
    # not the products' other files
    named = {
        a["href"].split("/files/", 1)[1]
        for p in items.iterdir()
        for k, a in json.loads(p.read_text())["assets"].items()
        if k != "product-metadata"
    }
    needed = sum((safe / rel).stat().st_size for rel in named)
    whole = sum(f.stat().st_size for f in safe.rglob("*") if f.is_file())
    assert needed <= sent <= 1.2 * needed < whole


def test_an_area_reads_only_its_part_of_the_served_cogs(tmp_path, synthetic):
    """An AOI of a few patches: GDAL fetches the COG blocks its window covers, not the tile;
    its patch files equal the whole tile's build's, byte for byte."""
    from pyproj import Transformer

    from ben_builder.patches.tiles import tile_geometry

    safe, items = tmp_path / "safe", tmp_path / "served-items"
    g = tile_geometry("T33UUP")
    to_ll = Transformer.from_crs(g.epsg, 4326, always_xy=True)
    # patches 1-2 east and 1-2 south of T33UUP's corner (points inside those 1.2 km cells)
    lon, lat = to_ll.transform(
        [g.ulx_m + 1_500, g.ulx_m + 3_300], [g.uly_m - 3_300, g.uly_m - 1_500]
    )
    box = [min(lon), min(lat), max(lon), max(lat)]
    state = StacState(files=safe)
    with StacServer(state) as server:
        _write(safe, items, base_url=f"{server.base}/files")
        state.items = [json.loads(p.read_text()) for p in sorted(items.iterdir())]
        stac = {"url": f"{server.base}/", "items_dir": str(tmp_path / "found")}
        stac["query"] = {"tiles": ["T33UUP"]}
        inputs = {"source": "stac", "stac": stac, "clc_path": str(synthetic.clc)}
        whole = run(_config(tmp_path, "whole", None, synthetic.clc, inputs), progress=False)
        whole_bytes, state.bytes_sent = state.bytes_sent, 0
        part = run(
            _config(tmp_path, "part", None, synthetic.clc, inputs, aoi={"bbox": box}),
            progress=False,
        )
        part_bytes = state.bytes_sent
    assert not whole.failures and not part.failures
    (s,) = [r.summary for r in part.results]
    assert s["kept"] + s["dropped_nodata"] + s["dropped_unlabeled"] <= 9
    assert s["dropped_outside_aoi"] >= 100 - 9 and s["kept"] > 0
    in_part = {k: v for k, v in digest_tree(tmp_path / "part").items() if k.endswith(".tif")}
    in_whole = digest_tree(tmp_path / "whole")
    assert in_part and all(in_whole[k] == v for k, v in in_part.items())
    assert part_bytes < 0.6 * whole_bytes  # the 512 px blocks the window touches, not the tile


def test_a_throttling_server_is_retried(tmp_path, synthetic):
    """503 answers to range requests (a catalogue's bucket under load) are retried by GDAL."""
    safe, items = tmp_path / "safe", tmp_path / "served-items"
    state = StacState(files=safe)
    with StacServer(state) as server:
        with rasterio.Env():
            r = RECIPES[1]
            write_item(
                write_product(r, scene_for(r.tile_id, SIZE_PX, 0), safe),
                items,
                f"{server.base}/files",
            )
        state.unavailable = 3
        built = run(_config(tmp_path, "served", items, synthetic.clc), progress=False)
    assert state.unavailable < 0  # all three were answered 503, and more requests came
    assert not built.failures, [r.error for r in built.failures]
    assert built.results[0].summary["kept"] > 0
