"""Benchmark: cutting and writing all 8,281 patches of a full-size L2A tile vs bare JP2 decode.

Both measurements run in fresh processes pinned to one core, on the same product, in one run.
The bare decode is timed as GDAL decodes with one thread and as the chain decodes (OpenJPEG in
the calling thread, ``bare_decode_opj_inline_s``); patching decodes as the chain does. This
machine's speed drifts by 5-25% within an hour, so patching runs ``--repeat`` times, each right
after a bare decode, and each run's ratio is taken against the decode just before it; the write
stage's spread is given over those runs. Targets: patching / bare decode <= 1.3, peak memory
<= 4 GB (issue 2); per tile <= 1.1x the bare decode on one core (issue 15).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    CHAIN_OPJ_THREADS,
    FULL_PX,
    bare_decode,
    full_size_product,
    measure,
    write_results,
)

from ben_builder.sources.synthetic.products import ProductRecipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/patch.json"))
    ap.add_argument("--size-px", type=int, default=FULL_PX)
    ap.add_argument("--repeat", type=int, default=3, help="bare decode + patching pairs")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="write the patches here (default: TMPDIR; /dev/shm leaves the disk out)",
    )
    args = ap.parse_args()

    recipe = ProductRecipe(
        "T33UUP", "L2A", "04.00", datetime(2017, 6, 13, 10, 10, 31), swath_edge=False
    )
    t = time.perf_counter()
    product = full_size_product(recipe, args.size_px)
    gen_s = time.perf_counter() - t

    inline = bare_decode(product, CHAIN_OPJ_THREADS)
    decodes, patches = [], []
    # the patches stay until the end: deleting ~100,000 files slows the next run's file creation
    # (see bench_build.py)
    session = Path(tempfile.mkdtemp(prefix="ben_bench_patch_", dir=args.work_dir))
    try:
        for _ in range(args.repeat):  # each patching run right after its own bare decode
            decodes.append(bare_decode(product))
            patches.append(patch_once(product, session))
    finally:
        shutil.rmtree(session, ignore_errors=True)
    ratios = [round(p["wall_s"] / d["wall_s"], 3) for d, p in zip(decodes, patches, strict=True)]
    middle = sorted(range(args.repeat), key=lambda i: ratios[i])[args.repeat // 2]  # the median
    decode, patch = decodes[middle], patches[middle]
    figures = {
        "tile_px": args.size_px,
        "work_dir": str(session.parent),  # e.g. /dev/shm leaves the file system out
        "generation_s_not_timed": round(gen_s, 1),
        "bare_decode_12_bands_s": decode["wall_s"],
        "bare_decode_peak_rss_mb": decode["peak_rss_mb"],
        "bare_decode_opj_inline_s": inline["wall_s"],
        "patching_s": patch["wall_s"],
        "patching_peak_rss_mb": patch["peak_rss_mb"],
        "patching_stages_s": patch["stages_s"],
        "patches": patch["patches"],
        "files": patch["files"],
        "ratio_patching_over_decode": ratios[middle],  # the median run's
        "ratio_patching_over_inline_decode": round(patch["wall_s"] / inline["wall_s"], 3),
        "runs": [
            {
                "bare_decode_s": d["wall_s"],
                "patching_s": p["wall_s"],
                "ratio": r,
                "write_s": p["stages_s"].get("write"),
                "write_overlapped_s": p["stages_s"].get("write_overlapped"),
            }
            for d, p, r in zip(decodes, patches, ratios, strict=True)
        ],
        "ratio_min_median_max": [min(ratios), ratios[middle], max(ratios)],
        "target_ratio": 1.3,
        "target_ratio_per_tile_issue_15": 1.1,
        "target_peak_rss_mb": 4096,
    }
    write_results(args.out, "patch", figures)


def patch_once(product: Path, session: Path) -> dict[str, Any]:
    """Patch ``product`` once on one core (as ``ben-builder patch`` decodes), under ``session``."""
    work = Path(tempfile.mkdtemp(prefix="run_", dir=session))
    return measure(
        f"""
import rasterio
from ben_builder.chain.product import process_product
with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=256):
    s = process_product({str(product)!r}, {str(work)!r})
result["patches"] = s.kept
result["files"] = s.files_written
result["stages_s"] = s.seconds
""",
        env={"OPJ_NUM_THREADS": CHAIN_OPJ_THREADS},
    )


if __name__ == "__main__":
    main()
