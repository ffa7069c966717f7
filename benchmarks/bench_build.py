"""Benchmark: the whole chain on 4 full-size tiles with 1 and with 2 Dask workers.

Also, in the same run, the bare JP2 decode of one tile's 12 bands (one core), to compare the
end-to-end time per tile against it. Peak memory is sampled for every worker process.
Targets (issue 4): speed-up 2 workers / 1 worker >= 1.7; end-to-end time per tile (1 worker)
within 1.5x of the bare decode.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    CACHE,
    FULL_PX,
    bare_decode,
    full_size_clc,
    full_size_product,
    write_results,
)

from ben_builder.config import load_config  # noqa: E402
from ben_builder.synth.products import ProductRecipe  # noqa: E402


class RssSampler:
    """Samples the resident memory of this process's descendants (the Dask workers)."""

    def __init__(self) -> None:
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak[child.pid] = max(self.peak.get(child.pid, 0.0), rss)
            time.sleep(0.5)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_once(products: Path, clc: Path, workers: int) -> dict[str, float]:
    from ben_builder.pipeline import run

    out = Path(tempfile.mkdtemp(prefix=f"ben_bench_build_{workers}_"))
    cfg_path = out / "run.yaml"
    cfg_path.write_text(
        f"name: bench{workers}\noutput: {out / 'archive'}\n"
        f"inputs: {{source: local, products_dir: {products}, clc_path: {clc}}}\n"
        f"report_samples: 12\ncluster: {{kind: local, n_workers: {workers}}}\n"
    )
    try:
        with RssSampler() as rss:
            t = time.perf_counter()
            result = run(load_config(cfg_path), progress=False)
            wall = time.perf_counter() - t
        if result.failures:
            raise RuntimeError(f"benchmark run failed: {result.failures}")
        worker_peaks = sorted(rss.peak.values(), reverse=True)[:workers]
        return {"wall_s": round(wall, 1), "patches": result.counts["metadata"]
                + result.counts["flagged"],
                "worker_peak_rss_mb": [round(v) for v in worker_peaks]}  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/build.json"))
    ap.add_argument("--size-px", type=int, default=FULL_PX)
    ap.add_argument("--tiles", type=int, default=4)
    args = ap.parse_args()

    start = datetime(2017, 6, 13, 10, 10, 31)
    recipes = [ProductRecipe("T33UUP", "L2A", "04.00", start + timedelta(days=10 * i))
               for i in range(args.tiles)]  # fmt: skip
    paths = [full_size_product(r, args.size_px) for r in recipes]
    products = CACHE / f"{args.size_px}px" / f"build{args.tiles}"
    products.mkdir(exist_ok=True)
    for p in paths:
        link = products / p.name
        if not link.exists():
            link.symlink_to(p)
    clc = full_size_clc(args.size_px)

    decode = bare_decode(paths[0])
    one = run_once(products, clc, 1)
    two = run_once(products, clc, 2)
    per_tile = one["wall_s"] / args.tiles
    write_results(args.out, "build", {
        "tile_px": args.size_px,
        "tiles": args.tiles,
        "bare_decode_one_tile_s": decode["wall_s"],
        "workers_1": one,
        "workers_2": two,
        "speedup_2_over_1": round(one["wall_s"] / two["wall_s"], 2),
        "end_to_end_per_tile_1_worker_s": round(per_tile, 1),
        "per_tile_over_decode": round(per_tile / decode["wall_s"], 2),
        "targets": {"speedup": 1.7, "per_tile_over_decode": 1.5},
    })  # fmt: skip


if __name__ == "__main__":
    main()
