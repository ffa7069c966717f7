"""Benchmark: the whole chain on full-size tiles, on one core and on all of them.

Scenarios (``--scenario``, default ``all``):

- ``one-tile``: one tile on one core (one worker, one decoding thread) against the default plan
  (one worker with every core as decoding threads), run ``--repeat`` times each, with the stage
  times of every run: ``write`` is the time the product waited for its files, and
  ``write_overlapped`` the summed busy time of the threads that write each band's files while
  other bands decode (the write stage's spread). Target (issue 15): all cores <= 0.6x one core.
- ``two-tiles``: 2 tiles on one core (1 worker, 1 thread) against the default plan (one worker
  per tile, each pinned to its own core: fewer tiles than cores give the spare cores to the
  tiles as decoding threads). Target: all cores <= 0.6x one core on 2 cores.
- ``four-tiles``: 4 tiles on one core (1 Dask worker with 1 thread) and with 2 workers (the
  default plan). Target: speed-up >= 1.8 (issue 15; 1.7 in issue 4).

A run of one scenario keeps the others' figures in the results file; each scenario records its
own date and the bare decode it was compared with.

Every scenario also times the bare JP2 decode of one tile's 12 bands (one core) in the same
run, to compare the end-to-end time per tile against it (target: <= 1.1x): as GDAL decodes with
one thread (``bare_decode_one_tile_s``, the reference of the target: a pool of one OpenJPEG
thread per JP2 tile) and as the chain's workers decode (``bare_decode_opj_inline_s``: OpenJPEG
in the calling thread); the ratios are given against both. Peak memory is
sampled for every worker process. A one-core run is confined to one core as a whole (this
process, the scheduler and the workers with their writer threads). The archives are removed
only when the benchmark ends (~1.6 GB per tile built; checked before it starts): on an ext4
without a journal, files created just after ~100,000 were deleted cost ~4x the kernel time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    CACHE,
    CHAIN_OPJ_THREADS,
    FULL_PX,
    bare_decode,
    full_size_clc,
    full_size_product,
    write_results,
)

from ben_builder.config import load_config  # noqa: E402
from ben_builder.sources.synthetic.products import ProductRecipe  # noqa: E402


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


GB_PER_TILE_RUN = 1.6  # disk one tile's archive takes (v2 layout, reference maps, report)


def run_once(
    session: Path,
    products: Path,
    clc: Path,
    workers: int | None,
    threads: int | None = None,
    cores: int | None = None,
) -> dict[str, object]:
    """One build; ``None``: the default plan (workers and threads from the cores and tiles).

    The archive is built in a new folder under ``session``, which the caller removes.
    ``cores``: confine the run (this process, the scheduler and the workers it spawns, whose
    writer threads included) to that many cores; a worker with one decoding thread otherwise
    still writes on a second core.
    """
    from ben_builder.chain.run import run

    every = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, set(sorted(every)[:cores]))  # inherited by the spawned workers

    out = Path(tempfile.mkdtemp(prefix=f"run_{workers}_", dir=session))
    cfg_path = out / "run.yaml"
    cluster = ", ".join(
        [f"n_workers: {workers}"] * (workers is not None)
        + [f"threads_per_task: {threads}"] * (threads is not None)
    )
    cfg_path.write_text(
        f"name: bench{workers}\noutput: {out / 'archive'}\n"
        f"inputs: {{source: local, products_dir: {products}, clc_path: {clc}}}\n"
        f"report_samples: 12\ncluster: {{kind: local, {cluster}}}\n"
    )
    try:
        with RssSampler() as rss:
            t = time.perf_counter()
            result = run(load_config(cfg_path), progress=False)
            wall = time.perf_counter() - t
        if result.failures:
            raise RuntimeError(f"benchmark run failed: {result.failures}")
        worker_peaks = sorted(rss.peak.values(), reverse=True)[: workers or 1]
        stages = [
            json.loads(p.read_text())
            for p in sorted((out / "archive" / "report" / "timings").glob("*.json"))
        ]
        figures = {
            "wall_s": round(wall, 1),
            "patches": result.counts["metadata"] + result.counts["flagged"],
            "worker_peak_rss_mb": [round(v) for v in worker_peaks],
            "stage_s": [{k: round(v, 1) for k, v in st.items()} for st in stages],
        }
        print(
            f"run (workers={workers}, threads={threads}, cores={cores}): {json.dumps(figures)}",
            file=sys.stderr,
            flush=True,
        )
        return figures
    finally:
        os.sched_setaffinity(0, every)  # the archive stays until the caller removes ``session``


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/build.json"))
    ap.add_argument("--size-px", type=int, default=FULL_PX)
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument(
        "--scenario", choices=["one-tile", "two-tiles", "four-tiles", "all"], default="all"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs of each one-tile variant")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="build the archives here (e.g. /dev/shm: the file system left out)",
    )
    args = ap.parse_args()
    start = datetime(2017, 6, 13, 10, 10, 31)
    recipes = [
        ProductRecipe("T33UUP", "L2A", "04.00", start + timedelta(days=10 * i))
        for i in range(max(args.tiles, 2))
    ]
    paths = [full_size_product(r, args.size_px) for r in recipes]

    def tiles_folder(n: int) -> Path:
        """A folder of links to the first ``n`` products (the input of an ``n``-tile run)."""
        folder = CACHE / f"{args.size_px}px" / f"build{n}"
        folder.mkdir(exist_ok=True)
        for p in paths[:n]:
            if not (folder / p.name).exists():
                (folder / p.name).symlink_to(p)
        return folder

    clc = full_size_clc(args.size_px)

    # Archives are removed only when the benchmark ends: deleting ~100,000 files just before
    # the next run slowed its file creation ~4x here (an ext4 without a journal skips inodes
    # freed in the last 5-305 s when it allocates one, scanning them at every file created)
    runs = {"one-tile": 2 * args.repeat, "two-tiles": 4, "four-tiles": 2 * args.tiles}
    tile_runs = sum(n for k, n in runs.items() if args.scenario in (k, "all"))
    where = args.work_dir or Path(tempfile.gettempdir())
    free_gb, need = shutil.disk_usage(where).free / 1e9, tile_runs * GB_PER_TILE_RUN
    if free_gb < need:
        raise SystemExit(
            f"{where}: {free_gb:.0f} GB free, the archives of this benchmark take ~{need:.0f} GB; "
            "free space or pass --work-dir"
        )
    decode = bare_decode(paths[0])
    inline = bare_decode(paths[0], CHAIN_OPJ_THREADS)
    decodes = {
        "bare_decode_one_tile_s": decode["wall_s"],
        "bare_decode_opj_inline_s": inline["wall_s"],
    }
    figures: dict[str, object] = {"tile_px": args.size_px, **decodes, "work_dir": str(where)}
    session = Path(tempfile.mkdtemp(prefix="ben_bench_build_", dir=args.work_dir))
    try:
        new = scenarios(
            args, session, tiles_folder, clc, float(decode["wall_s"]), float(inline["wall_s"])
        )
    finally:
        shutil.rmtree(session, ignore_errors=True)
    for scenario in new.values():  # each scenario says when it ran, against which decodes
        scenario.update(date=datetime.now().isoformat(timespec="seconds"), **decodes)
    if args.scenario != "all":  # the other scenarios' figures stay, with their own dates
        figures.update(earlier_scenarios(args.out, args.size_px, exclude=set(new)))
    figures.update(new)
    write_results(args.out, "build", figures)


SCENARIO_KEYS = ("one_tile", "two_tiles", "four_tiles")


def earlier_scenarios(path: Path, size_px: int, exclude: set[str]) -> dict[str, dict[str, object]]:
    """Scenarios of an earlier results file of the same tile size, with their date and decode."""
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    if doc["figures"].get("tile_px") != size_px:
        return {}
    kept = {}
    for key in SCENARIO_KEYS:
        if key in doc["figures"] and key not in exclude:
            kept[key] = {
                "date": doc["date"],
                "bare_decode_one_tile_s": doc["figures"].get("bare_decode_one_tile_s"),
                "bare_decode_opj_inline_s": doc["figures"].get("bare_decode_opj_inline_s"),
                **doc["figures"][key],
            }
    return kept


def scenarios(
    args: argparse.Namespace,
    session: Path,
    tiles_folder: Callable[[int], Path],
    clc: Path,
    decode_s: float,
    inline_s: float,
) -> dict[str, dict[str, object]]:
    """The figures of the scenarios ``args`` asks for (archives built under ``session``).

    ``decode_s``, ``inline_s``: the bare decode of a tile as GDAL does it with one thread, and
    with OpenJPEG in the calling thread (as the chain decodes).
    """
    figures: dict[str, dict[str, object]] = {}
    if args.scenario in ("one-tile", "all"):
        single = tiles_folder(1)
        one_core = [run_once(session, single, clc, 1, 1, cores=1) for _ in range(args.repeat)]
        all_cores = [run_once(session, single, clc, None) for _ in range(args.repeat)]
        best_one = min(float(r["wall_s"]) for r in one_core)  # type: ignore[arg-type]
        best_all = min(float(r["wall_s"]) for r in all_cores)  # type: ignore[arg-type]
        runs = [st for r in one_core + all_cores for st in r["stage_s"]]  # type: ignore[attr-defined]
        writes = [st["write"] for st in runs]
        overlapped = [st.get("write_overlapped", 0.0) for st in runs]
        figures["one_tile"] = {
            "one_core": one_core,
            "all_cores": all_cores,
            "best_one_core_s": best_one,
            "best_all_cores_s": best_all,
            "all_over_one": round(best_all / best_one, 2),
            "one_core_over_decode": round(best_one / decode_s, 2),
            "one_core_over_inline_decode": round(best_one / inline_s, 2),
            "write_stage_s_min_max": [min(writes), max(writes)],
            "write_thread_busy_s_min_max": [min(overlapped), max(overlapped)],
            "targets": {"all_over_one": 0.6, "one_core_over_decode": 1.1},
        }
    if args.scenario in ("two-tiles", "all"):
        pair = tiles_folder(2)
        one = run_once(session, pair, clc, 1, 1, cores=1)
        every = run_once(session, pair, clc, None)  # the default plan: a worker per tile
        figures["two_tiles"] = {
            "one_core": one,
            "all_cores": every,
            "all_over_one": round(float(every["wall_s"]) / float(one["wall_s"]), 2),  # type: ignore[arg-type]
            "targets": {"all_over_one": 0.6},
        }
    if args.scenario in ("four-tiles", "all"):
        products = tiles_folder(args.tiles)
        one = run_once(session, products, clc, 1, 1, cores=1)  # one core: one worker, one thread
        two = run_once(session, products, clc, 2)  # the default plan on 2 workers
        per_tile = float(one["wall_s"]) / args.tiles  # type: ignore[arg-type]
        figures["four_tiles"] = {
            "tiles": args.tiles,
            "workers_1": one,
            "workers_2": two,
            "speedup_2_over_1": round(float(one["wall_s"]) / float(two["wall_s"]), 2),  # type: ignore[arg-type]
            "end_to_end_per_tile_1_worker_s": round(per_tile, 1),
            "per_tile_over_decode": round(per_tile / decode_s, 2),
            "per_tile_over_inline_decode": round(per_tile / inline_s, 2),
            "targets": {"speedup": 1.8, "per_tile_over_decode": 1.1},
        }
    return figures


if __name__ == "__main__":
    main()
