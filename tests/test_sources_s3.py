"""Items of the CDSE catalogue link the bands on its S3 store (``s3://eodata/...``): GDAL reads
them through ``/vsis3/``, here from moto's S3 server (the S3 protocol: signed requests, Range
GETs) on 127.0.0.1, configured as a user configures the CDSE endpoint."""

from __future__ import annotations

import json

import boto3
import pytest
import rasterio
from moto.server import ThreadedMotoServer

from ben_builder.chain.run import run
from ben_builder.errors import MetadataError
from ben_builder.product.reader import open_product
from ben_builder.sources.synthetic.stac import write_item
from ben_builder.sources.synthetic.writer import scene_for, write_product
from tests.helpers import digest_tree
from tests.test_sources_synthetic_stac import RECIPES, SIZE_PX, _config

PREFIX = "Sentinel-2/MSI/L2A"


@pytest.fixture
def s3(monkeypatch):
    """An S3 endpoint with an ``eodata`` bucket; GDAL's and boto3's settings point at it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {  # what a CDSE user sets: endpoint, keys; here plain HTTP and path-style
        "AWS_S3_ENDPOINT": f"{host}:{port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_ACCESS_KEY_ID": "stand-in",
        "AWS_SECRET_ACCESS_KEY": "stand-in",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in settings.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    client.create_bucket(Bucket="eodata")
    yield client
    server.stop()


def _upload(client, product, prefix):
    for f in sorted(product.rglob("*")):
        if f.is_file():
            key = f"{prefix}/{product.name}/{f.relative_to(product).as_posix()}"
            client.upload_file(str(f), "eodata", key)


def test_cdse_items_read_their_bands_from_s3(tmp_path, synthetic, s3):
    old, new = RECIPES[1], RECIPES[0]  # baselines 02.07 (no offset) and 04.00
    safe, items = tmp_path / "safe", tmp_path / "items"
    with rasterio.Env():
        for r in (old, new):
            product = write_product(r, scene_for(r.tile_id, SIZE_PX, 0), safe)
            prefix = f"{PREFIX}/{r.sensing:%Y/%m/%d}"
            _upload(s3, product, prefix)
            write_item(product, items, base_url=f"s3://eodata/{prefix}", style="cdse")
    (old_item,) = items.glob("*_N0207_*")
    (new_item,) = items.glob("*_N0400_*")
    doc = json.loads(old_item.read_text())
    assert "B02_10m" in doc["assets"] and doc["assets"]["B02_10m"]["href"].startswith("s3://")
    p = open_product(old_item)
    assert p.band_paths["B02"].startswith("/vsis3/eodata/") and p.offset_rule == "before-04.00"
    # the 04.00 item's offset is only in its MTD, which is on S3 too: refused, not guessed
    with pytest.raises(MetadataError, match="only bands are read"):
        open_product(new_item)
    new_item.unlink()
    (safe / new_item.name.replace(".json", ".SAFE")).rename(tmp_path / "elsewhere.SAFE")

    built = run(_config(tmp_path, "from-s3", items, synthetic.clc), progress=False)
    ref = run(_config(tmp_path, "from-safe", safe, synthetic.clc), progress=False)
    assert not built.failures and not ref.failures, [r.error for r in built.failures]

    def patches(root):
        return {k: v for k, v in digest_tree(root).items() if not k.endswith((".json", ".sha256"))}

    got = patches(tmp_path / "from-s3")
    assert got == patches(tmp_path / "from-safe") and sum(k.endswith(".tif") for k in got) > 500
