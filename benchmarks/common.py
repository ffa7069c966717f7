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

import rasterio

from ben_builder.synth.products import ProductRecipe
from ben_builder.synth.writer import scene_for, write_product

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
    from ben_builder.synth.writer import write_clc

    clc_dir = CACHE / f"{size_px}px" / "clc"
    clc_dir.mkdir(parents=True, exist_ok=True)
    clc = clc_dir / "U2018_CLC2018_V2020_20u1.gpkg"
    if not clc.exists():
        write_clc([scene_for("T33UUP", size_px, 0)], clc_dir)
    return clc


def bare_decode(product: Path) -> dict[str, Any]:
    """Decode a product's 12 bands whole, one core, in a fresh process (the floor of a tile)."""
    return measure(f"""
import rasterio
from ben_builder import specs
from ben_builder.safe import open_product, read_band
with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=256):
    p = open_product({str(product)!r})
    for b in specs.bands().bands:
        read_band(p, b.name, b.resolution_m)
""")


def measure(code: str, cores: int = 1) -> dict[str, Any]:
    """Run Python ``code`` in a fresh process pinned to ``cores`` cores.

    The code must set ``result`` (a dict). Returns it with ``wall_s`` and ``peak_rss_mb`` added.
    """
    wrapper = f"""
import json, os, resource, time
os.sched_setaffinity(0, set(range({cores})))
t0 = time.perf_counter()
result = {{}}
{code}
result["wall_s"] = round(time.perf_counter() - t0, 2)
result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print("RESULT" + json.dumps(result))
"""
    env = dict(os.environ, GDAL_NUM_THREADS="1", OPJ_NUM_THREADS="1", OMP_NUM_THREADS="1")
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
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "gdal": rasterio.__gdal_version__},
        "figures": figures,
    }  # fmt: skip
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
