"""Shared helpers of the benchmark scripts: a cached full-size product, isolated measurements."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import rasterio

from ben_builder.runtime import DECODER_ENV_DEFAULTS
from ben_builder.sources.synthetic.products import ProductRecipe
from ben_builder.sources.synthetic.writer import scene_for, write_product

CACHE = Path(os.environ.get("BEN_BENCH_CACHE", Path(__file__).parent / ".cache"))
FULL_PX = 10980


def full_size_product(recipe: ProductRecipe, size_px: int = FULL_PX) -> Path:
    """Write (once) and return a full-size synthetic product for ``recipe``."""
    out = CACHE / f"{size_px}px"
    out.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        return write_product(recipe, scene_for(recipe.tile_id, size_px, 0), out)


def full_size_clc(size_px: int = FULL_PX) -> Path:
    """Write (once) and return the CLC GeoPackage of the benchmark tile's land cover."""
    from ben_builder.sources.synthetic.writer import write_clc

    clc_dir = CACHE / f"{size_px}px" / "clc"
    clc_dir.mkdir(parents=True, exist_ok=True)
    clc = clc_dir / "U2018_CLC2018_V2020_20u1.gpkg"
    if not clc.exists():
        write_clc([scene_for("T33UUP", size_px, 0)], clc_dir)
    return clc


def hard_clc(size_px: int = FULL_PX, vertices: int = 300, marine_vertices: int = 500_000) -> Path:
    """Write (once) and return a CLC of realistic complexity for the benchmark tile.

    The simple CLC's polygons densified to about ``vertices`` vertices each, plus one marine
    polygon (Sea and ocean, 523) of about ``marine_vertices`` vertices covering the tile's
    south-west quarter, as a real coastline polygon does; same layer and fields.
    """
    import geopandas as gpd
    import pyogrio
    import shapely

    simple = full_size_clc(size_px)
    out_dir = CACHE / f"{size_px}px" / "clc_hard"
    out = out_dir / simple.name
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    layer = pyogrio.list_layers(simple)[0][0]
    frame = gpd.read_file(simple, layer=layer)
    lengths = shapely.length(frame.geometry.values)
    frame["geometry"] = shapely.segmentize(frame.geometry.values, lengths / vertices)
    x0, y0, x1, y1 = frame.total_bounds
    quarter = shapely.box(x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)
    marine = shapely.segmentize(quarter, quarter.length / marine_vertices)
    from ben_builder import specs

    row = frame.iloc[[0]].copy()
    row[specs.clc().source.code_field] = "523"
    row["geometry"] = [shapely.MultiPolygon([marine])]
    frame = gpd.GeoDataFrame(pd.concat([frame, row], ignore_index=True), crs=frame.crs)
    tmp = out.with_name(out.name + ".partial")
    frame.to_file(tmp, layer=layer, driver="GPKG")
    tmp.rename(out)
    return out


#: ``OPJ_NUM_THREADS`` of the chain's processes (OpenJPEG in the calling thread)
CHAIN_OPJ_THREADS = DECODER_ENV_DEFAULTS["OPJ_NUM_THREADS"]


def bare_decode(product: Path, opj_threads: str = "1") -> dict[str, Any]:
    """Decode a product's 12 bands whole, one core, in a fresh process (the floor of a tile).

    ``opj_threads`` (``OPJ_NUM_THREADS``): ``"1"`` decodes as GDAL does with one thread (each
    JP2 tile's codec gets a pool of one OpenJPEG thread: the reference of issue 15), ``"0"`` as
    the chain's processes do (OpenJPEG in the calling thread).
    """
    return measure(
        env={"OPJ_NUM_THREADS": opj_threads},
        code=f"""
import rasterio
from ben_builder import specs
from ben_builder.product.safe import open_product, read_band
with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=256):
    p = open_product({str(product)!r})
    for b in specs.bands().bands:
        read_band(p, b.name, b.resolution_m)
""",
    )


def measure(code: str, cores: int = 1, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run Python ``code`` in a fresh process pinned to ``cores`` cores.

    The code must set ``result`` (a dict). Returns it with ``wall_s`` and ``peak_rss_mb`` added.
    The process decodes with one thread (``GDAL_NUM_THREADS``, ``OPJ_NUM_THREADS``) unless
    ``env`` says otherwise.
    """
    wrapper = f"""
import json, os, resource, time
os.sched_setaffinity(0, set(range({cores})))
t0 = time.perf_counter()
result = {{}}
{code}
result["wall_s"] = round(time.perf_counter() - t0, 2)
# VmHWM: this process's own peak. ru_maxrss keeps the peak of the parent it was forked from
# across exec (Linux), so a benchmark that generated a tile first saw its own size in every child
with open("/proc/self/status") as fh:
    hwm_kb = next((int(x.split()[1]) for x in fh if x.startswith("VmHWM:")), None)
kb = hwm_kb if hwm_kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result["peak_rss_mb"] = round(kb / 1024, 1)
print("RESULT" + json.dumps(result))
"""
    env = {
        **os.environ,
        "GDAL_NUM_THREADS": "1",
        "OPJ_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def write_results(path: Path, name: str, figures: dict[str, Any]) -> None:
    """Write benchmark figures with machine facts to ``path`` (JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "gdal": rasterio.__gdal_version__,
        },
        "figures": figures,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps(doc, indent=2))


def now() -> float:
    """Monotonic seconds."""
    return time.perf_counter()


__all__ = [
    "CACHE",
    "bare_decode",
    "full_size_clc",
    "full_size_product",
    "measure",
    "resource",
    "write_results",
]
