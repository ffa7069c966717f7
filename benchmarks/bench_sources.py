"""Benchmark: one tile from its SAFE product (JPEG 2000) against the same tile from COGs and
from an EOPF Zarr product.

The generator writes one scene three times: as a SAFE product with JP2 bands (ESA's format), as
a SAFE product with deflate-tiled GeoTIFF bands (Planetary Computer's) with a STAC item, and as
an EOPF Zarr store (Blosc-zstd chunks). Each is cut whole (``process_product``) in a fresh
process pinned to one core, alternating, ``--repeat`` times; the medians are compared. Then the
tile's COGs and Zarr store are served by the tests' STAC stand-in (HTTP with Range requests) and
cut again, counting the bytes fetched against the bytes of the band files; and a square area
(``--aoi-km``) is cut from the served COGs, its bytes counted against its share of the bands.

Goals (issue 29): a tile from COGs in at most 0.3x the SAFE path's time; an area fetching at
most 1.5x the bytes its patches need.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from common import CACHE, measure, write_results  # noqa: E402

from ben_builder.sources.synthetic.products import ProductRecipe  # noqa: E402


def _cut(product: Path, work: Path, aoi_wkt: str | None = None) -> dict[str, Any]:
    """Cut ``product`` into ``work`` in a fresh process; the patches are removed afterwards (a
    whole tile's are ~1 GB, which on /dev/shm is memory)."""
    try:
        return _measure_cut(product, work, aoi_wkt)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure_cut(product: Path, work: Path, aoi_wkt: str | None) -> dict[str, Any]:
    return measure(
        f"""
import rasterio
from ben_builder.chain.product import Options, process_product
with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=256):
    s = process_product(
        {str(product)!r}, {str(work)!r}, Options(verify=False, aoi_wkt={aoi_wkt!r})
    )
result["patches"] = s.kept
result["stages_s"] = s.seconds
""",
        env={"OPJ_NUM_THREADS": "0"},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/sources.json"))
    ap.add_argument("--size-px", type=int, default=10980)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="write the patches here (default: TMPDIR; /dev/shm leaves the disk out)",
    )
    ap.add_argument("--aoi-km", type=float, default=10.0, help="side of the square AOI")
    args = ap.parse_args()

    import rasterio

    from ben_builder.sources.synthetic.eopf import write_eopf, write_eopf_item
    from ben_builder.sources.synthetic.stac import write_item
    from ben_builder.sources.synthetic.writer import scene_for, write_product
    from tests.stand_ins.stacapi import StacServer, StacState

    jp2 = ProductRecipe("T33UUP", "L2A", "04.00", datetime(2017, 6, 13, 10, 10, 31))
    cog = replace(jp2, image_format="GeoTIFF")
    cache = CACHE / f"sources-{args.size_px}px"
    t = time.perf_counter()
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        scene = scene_for(jp2.tile_id, args.size_px, 0)
        safe = write_product(jp2, scene, cache / "jp2")
        tif = write_product(cog, scene, cache / "cog")
        zarr_dir = cache / "zarr"
        store = next(zarr_dir.glob("*.zarr"), None) or write_eopf(safe, zarr_dir)
    item = write_item(tif, cache / "items")
    gen_s = time.perf_counter() - t

    session = Path(tempfile.mkdtemp(prefix="ben_bench_sources_", dir=args.work_dir))
    runs: dict[str, list[dict[str, Any]]] = {"safe_jp2": [], "item_cog": [], "zarr": []}
    try:
        for i in range(args.repeat):
            runs["safe_jp2"].append(_cut(safe, session / f"jp2-{i}"))
            runs["item_cog"].append(_cut(item, session / f"cog-{i}"))
            runs["zarr"].append(_cut(store, session / f"zarr-{i}"))
        state = StacState(files=cache / "cog")
        with StacServer(state) as server:
            served = write_item(tif, session / "served", base_url=f"{server.base}/files")
            http = _cut(served, session / "http")
            sent, state.bytes_sent = state.bytes_sent, 0
            aoi_wkt, aoi_share = _aoi(args.aoi_km, args.size_px)
            area = _cut(served, session / "aoi", aoi_wkt)
            aoi_sent = state.bytes_sent
        state = StacState(files=zarr_dir)
        with StacServer(state) as server:
            zitem = write_eopf_item(store, session / "zitems", base_url=f"{server.base}/files")
            zarr_http = _cut(zitem, session / "zarr-http")
            zarr_sent = state.bytes_sent
    finally:
        shutil.rmtree(session, ignore_errors=True)
    wall = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    assets = json.loads(item.read_text())["assets"]
    band_bytes = sum(
        Path(a["href"]).stat().st_size for k, a in assets.items() if k != "product-metadata"
    )
    product_bytes = sum(f.stat().st_size for f in tif.rglob("*") if f.is_file())
    figures = {
        "tile_px": args.size_px,
        "work_dir": str(session.parent),
        "generation_s_not_timed": round(gen_s, 1),
        "safe_jp2_s": wall["safe_jp2"],
        "item_cog_local_s": wall["item_cog"],
        "ratio_cog_over_safe": round(wall["item_cog"] / wall["safe_jp2"], 3),
        "zarr_local_s": wall["zarr"],
        "ratio_zarr_over_safe": round(wall["zarr"] / wall["safe_jp2"], 3),
        "zarr_http_s": zarr_http["wall_s"],
        "zarr_http_bytes_fetched": zarr_sent,
        "zarr_store_bytes": sum(f.stat().st_size for f in store.rglob("*") if f.is_file()),
        "item_cog_http_s": http["wall_s"],
        "http_bytes_fetched": sent,
        "band_files_bytes": band_bytes,
        "cog_product_bytes": product_bytes,
        "jp2_product_bytes": sum(f.stat().st_size for f in safe.rglob("*") if f.is_file()),
        "ratio_fetched_over_band_files": round(sent / band_bytes, 3),
        "patches": runs["item_cog"][0]["patches"],
        "aoi_km": args.aoi_km,
        "aoi_s": area["wall_s"],
        "aoi_patches": area["patches"],
        "aoi_bytes_fetched": aoi_sent,
        "aoi_bytes_its_patches_need": round(band_bytes * aoi_share),
        "ratio_aoi_fetched_over_needed": round(aoi_sent / (band_bytes * aoi_share), 2),
        "target_ratio_aoi_fetched_over_needed": 1.5,
        "runs": runs,
        "target_ratio_cog_over_safe": 0.3,
    }
    write_results(args.out, "sources", figures)


def _aoi(side_km: float, tile_px: int) -> tuple[str, float]:
    """A square AOI of whole patches at T33UUP's corner (lon/lat WKT), and its share of the
    tile's area: the share of the band bytes its patches need."""
    from pyproj import Transformer
    from shapely import Polygon

    from ben_builder.patches.tiles import tile_geometry

    g = tile_geometry("T33UUP")
    cells = int(side_km * 1000 // 1200)
    inset, side = 100.0, cells * 1200.0 - 200.0  # inside the cells' borders
    to_ll = Transformer.from_crs(g.epsg, 4326, always_xy=True)
    xs = [g.ulx_m + inset, g.ulx_m + side, g.ulx_m + side, g.ulx_m + inset]
    ys = [g.uly_m - inset, g.uly_m - inset, g.uly_m - side, g.uly_m - side]
    ring = [to_ll.transform(x, y) for x, y in zip(xs, ys, strict=True)]
    return Polygon(ring).wkt, (cells * 1200.0) ** 2 / (tile_px * 10.0) ** 2


if __name__ == "__main__":
    main()
