"""Benchmark: cutting and writing all 8,281 patches of a full-size L2A tile vs bare JP2 decode.

Both measurements run in fresh processes pinned to one core, on the same product, in one run.
The bare decode is timed as GDAL decodes with one thread and as the chain decodes (OpenJPEG in
the calling thread, ``bare_decode_opj_inline_s``); patching decodes as the chain does.
Target (issue 2): patching time / bare decode time <= 1.3, peak memory <= 4 GB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    CHAIN_OPJ_THREADS,
    FULL_PX,
    bare_decode,
    full_size_product,
    measure,
    write_results,
)

from ben_builder.synth.products import ProductRecipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/patch.json"))
    ap.add_argument("--size-px", type=int, default=FULL_PX)
    args = ap.parse_args()

    recipe = ProductRecipe("T33UUP", "L2A", "04.00", datetime(2017, 6, 13, 10, 10, 31),
                           swath_edge=False)  # fmt: skip
    t = time.perf_counter()
    product = full_size_product(recipe, args.size_px)
    gen_s = time.perf_counter() - t

    decode = bare_decode(product)
    inline = bare_decode(product, CHAIN_OPJ_THREADS)
    work = Path(tempfile.mkdtemp(prefix="ben_bench_patch_"))
    try:
        patch = measure(
            f"""
import rasterio
from ben_builder.process import process_product
with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=256):
    s = process_product({str(product)!r}, {str(work)!r})
result["patches"] = s.kept
result["files"] = s.files_written
result["stages_s"] = s.seconds
""",
            env={"OPJ_NUM_THREADS": CHAIN_OPJ_THREADS},
        )  # as `ben-builder patch` decodes
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figures = {
        "tile_px": args.size_px,
        "work_dir": str(work.parent),  # TMPDIR: e.g. /dev/shm leaves the file system out
        "generation_s_not_timed": round(gen_s, 1),
        "bare_decode_12_bands_s": decode["wall_s"],
        "bare_decode_peak_rss_mb": decode["peak_rss_mb"],
        "bare_decode_opj_inline_s": inline["wall_s"],
        "patching_s": patch["wall_s"],
        "patching_peak_rss_mb": patch["peak_rss_mb"],
        "patching_stages_s": patch["stages_s"],
        "patches": patch["patches"],
        "files": patch["files"],
        "ratio_patching_over_decode": round(patch["wall_s"] / decode["wall_s"], 3),
        "ratio_patching_over_inline_decode": round(patch["wall_s"] / inline["wall_s"], 3),
        "target_ratio": 1.3,
        "target_peak_rss_mb": 4096,
    }
    write_results(args.out, "patch", figures)


if __name__ == "__main__":
    main()
